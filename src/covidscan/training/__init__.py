"""Training: one readable loop (`loop.py`) plus the pieces it uses.

- `schedule.py`  warm-up + step-decay learning-rate factor
- `losses.py`    weighted cross-entropy, class weights, the knowledge-distillation loss
- `distill.py`   teacher ensembles (saved fold models -> fused, temperature-softened probabilities)
- `checkpoint.py` atomic, resumable checkpoints with every RNG state, keyed by params and data
- `data.py`      memory-mapped `.npy` datasets, the epoch sampler, augmentation hook
- `datasets.py`  CNNRF's lesion-crop dataset, a model's input example
- `tasks.py`     the 2D tasks' records and datasets, the builders of every trained network
- `teacher.py`   one teacher fold model and its out-of-fold table -> `TeacherFold`; the CV aggregate -> `TeacherCV`
- `student.py`   one student run (with or without distillation) -> `StudentRun`
- `volume.py`    the 3D networks' centre-held-out split, volume datasets and training run
- `threshold.py` a classifier's operating threshold, chosen on validation data, set on its card
- `gates.py`     the protocols the loop codes against (Control Gate Block, auxiliary head)
- `memory.py`    peak resident memory

Nothing here imports MLflow or Optuna; the loop reports per-epoch metrics through a callback.
"""
