"""Training: one readable loop (`loop.py`) plus the pieces it uses.

- `schedule.py`  warm-up + step-decay learning-rate factor
- `losses.py`    weighted cross-entropy, class weights, the knowledge-distillation loss
- `distill.py`   teacher ensembles (fold models -> fused, temperature-softened probabilities)
- `checkpoint.py` atomic, resumable checkpoints with every RNG state
- `data.py`      memory-mapped `.npy` datasets, the epoch sampler, augmentation hook
- `gates.py`     the protocols the loop codes against (Control Gate Block, auxiliary head)
- `memory.py`    peak resident memory

Nothing here imports MLflow or Optuna; the loop reports per-epoch metrics through a callback.
"""
