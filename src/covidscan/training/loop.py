"""The training loop: one function, :func:`train`, readable top to bottom.

It trains every network of the project:

- a classifier (teacher fold, CNNCF, 3D CSAC-Net): weighted cross-entropy, plus, for a model with
  Control Gate Blocks, ``lambda_aux`` x the cross-entropy of the active gate's auxiliary head, and after
  every validation pass the active gate (the first closed one) is fed its own head's validation
  sensitivity (stage-wise: gate i + 1 cannot open before gate i; see :mod:`covidscan.training.gates`);
- the distilled student: the same, with the knowledge-distillation loss against a
  :class:`~covidscan.training.distill.TeacherEnsemble` evaluated on the same (augmented) batch;
- a regressor (CNNRF): mean squared error.

What happens, in order: pick the device (:func:`covidscan.device.resolve_device`: ``run.device="auto"``
-> CUDA when present, else CPU; ``"cuda"`` without CUDA -> :class:`~covidscan.errors.DeviceUnavailable`),
seed everything and switch on deterministic algorithms (``run.deterministic``), Xavier-initialise the model
(``init="xavier"``, :func:`covidscan.models.blocks.xavier_init_`), build the data loaders (workers,
pinned memory and persistent workers on CUDA), the loss, the optimiser (SGD with momentum and weight
decay, or Adam, per :class:`~covidscan.config.OptimConfig`) and the warm-up + step-decay schedule,
resume from the newest checkpoint when there is one, then run the epochs: train (bf16 autocast and
channels-last memory on GPU only), validate, update the gate, step the schedule, checkpoint, report.

Started by ``torchrun`` with several ranks, the same function trains data-parallel
(:mod:`covidscan.training.distributed`): each rank its shard of every global batch through
DistributedDataParallel, the validation gathered over the ranks (the gate sees the whole set), rank 0
alone checkpointing and calling the callback. Without torchrun none of that runs.

The model kept is the last epoch's (as in the paper) or the best by validation (``keep="best"``:
highest validation AUROC for classifiers, lowest validation loss for regressors). Metrics go to an
optional ``callback(metrics: dict)`` once per epoch; this module never imports MLflow.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from covidscan.config import DistillConfig, OptimConfig, RunConfig
from covidscan.device import resolve_device
from covidscan.errors import ConfigError
from covidscan.models.blocks import xavier_init_
from covidscan.training.checkpoint import latest_checkpoint, save_checkpoint, set_rng_state
from covidscan.training.data import EpochSampler, dataset_targets
from covidscan.training import distributed as ddp
from covidscan.training.distill import TeacherEnsemble
from covidscan.training.gates import active_gate_index, as_aux_list, find_gates, has_aux
from covidscan.training.losses import class_weights_from_labels, distillation_loss, weighted_cross_entropy
from covidscan.training.memory import peak_rss_mb
from covidscan.training.val_metrics import auroc, sensitivity
from covidscan.training.schedule import build_scheduler

log = logging.getLogger(__name__)

Task = Literal["classification", "regression"]
EpochCallback = Callable[[dict[str, float]], None]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        state_dict: the kept weights (CPU tensors), gate buffers included.
        history: one metrics dict per epoch (the same dicts the callback received, resumed epochs
            included).
        kept: "last" or "best"; best_epoch: the epoch whose weights were kept.
        gate_opened: whether every Control Gate Block opened (None: the model has no gate);
            gate_opened_epoch: the first epoch after whose validation it was open. A model with a card
            (:class:`covidscan.models.card.ModelCard`) gets ``card.gate_opened``: whether every gate was
            open in the weights kept.
        resumed_from: the completed epoch of the checkpoint resumed from (None: a fresh run).
        device: "cpu" or "cuda:0" etc.
        deterministic: whether deterministic algorithms were requested.
        nondeterministic_ops: ops that ran without a deterministic kernel (GPU, warn-only mode).
        warnings: things a person should read (e.g. "the gate never opened").
        peak_rss_mb: peak resident memory of this process; peak_gpu_mb: peak CUDA memory allocated.
    """

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    kept: str
    best_epoch: int | None
    gate_opened: bool | None
    gate_opened_epoch: int | None
    resumed_from: int | None
    device: str
    deterministic: bool
    nondeterministic_ops: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float | None = None


def train(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    *,
    optim: OptimConfig,
    run: RunConfig,
    task: Task = "classification",
    class_weights: Literal["inverse_frequency", "none"] | torch.Tensor = "inverse_frequency",
    keep: Literal["last", "best"] = "last",
    lambda_aux: float = 1.0,
    teachers: TeacherEnsemble | None = None,
    distill: DistillConfig | None = None,
    positive_index: int | None = None,
    init: Literal["xavier", "none"] = "xavier",
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    callback: EpochCallback | None = None,
) -> TrainResult:
    """Train ``model`` and return the kept weights and the per-epoch history.

    Args:
        model: a fresh model: ``forward(x) -> (B, C)`` logits (or (B, K) regression outputs); with
            ``forward_with_aux`` and gate modules for CNNCF (see :mod:`covidscan.training.gates`).
        train_set: yields (x, y); for classification with inverse-frequency weights it must expose
            ``targets`` (as :class:`~covidscan.training.data.NpyDataset` does).
        val_set: validation data (needed for the gate, for ``keep="best"`` and for val metrics).
        optim: optimiser, schedule, epochs, batch size, ``max_batches_per_epoch`` (caps training
            batches per epoch; validation always runs in full).
        run: seed, deterministic mode, device, DataLoader workers.
        task: "classification" (cross-entropy) or "regression" (MSE).
        class_weights: "inverse_frequency" (from the training labels), "none", or a (C,) tensor.
        keep: "last" (the paper) or "best" by validation.
        lambda_aux: weight of the auxiliary head's cross-entropy (``models.cnncf.lambda_aux``).
        teachers: a teacher ensemble -> distillation (classification only).
        distill: alpha and temperature of the distillation loss (default: DistillConfig()).
        positive_index: the class whose sensitivity drives the gate and is reported; None: class 1
            for 2 classes, the macro-average recall for more.
        init: "xavier" initialises the model before training (not when resuming); "none" keeps it.
        checkpoint_dir: write a checkpoint after every epoch here (None: no checkpoints).
        resume: continue from the newest complete checkpoint in ``checkpoint_dir`` when present.
        callback: called with each epoch's metrics (loss, lr, val AUROC, val sensitivity, gate
            state, ...) after the epoch's checkpoint is written. Not called for epochs restored from
            a checkpoint.
    """
    if keep == "best" and val_set is None:
        raise ConfigError("train.keep is 'best' but there is no validation set to choose by")
    if teachers is not None and task != "classification":
        raise ConfigError("distillation (teachers) applies to classification only")
    distill = distill or DistillConfig()
    report: list[str] = []

    # ---- 1. device, ranks, seeds, determinism ---------------------------------------------------
    device = resolve_device(run.device, "run.device")
    ctx, device = ddp.setup(run.distributed, device)  # torchrun with WORLD_SIZE > 1: join the group (no-op otherwise)
    on_gpu = device.type == "cuda"
    seed_everything(run.seed)
    with DeterministicMode(run.deterministic, device) as determinism:
        # ---- 2. model ------------------------------------------------------------------------
        if init == "xavier":
            xavier_init_(model)
        model.to(device)
        if teachers is not None:
            teachers.to(device)
        sync_bn = ddp.SyncBatchNormSwap(model) if ddp.use_sync_batchnorm(run.distributed, device, ctx) else None
        gates = find_gates(model) if task == "classification" else []
        use_aux = task == "classification" and has_aux(model)
        if gates and not use_aux:
            raise ConfigError(f"{type(model).__name__} has a Control Gate Block but no forward_with_aux()")
        if gates and val_set is None:
            raise ConfigError("a model with a Control Gate Block needs a validation set (the gate opens on validation sensitivity)")

        # ---- 3. data ---------------------------------------------------------------------------
        with_seeds = getattr(train_set, "supports_seeded_keys", False)
        if ctx.enabled:  # each rank its shard of the epoch's order and its share of the global batch
            if val_set is not None and len(val_set) < ctx.world_size:
                raise ConfigError(f"the validation set has {len(val_set)} samples, fewer than the {ctx.world_size} ranks")
            sampler = ddp.ShardedEpochSampler(train_set, run.seed, ctx, with_seeds=with_seeds)
            batch = ddp.per_rank_batch(optim.batch_size, ctx)
            train_loader = make_loader(train_set, batch, run, device, sampler=sampler)
            val_loader = make_loader(val_set, batch, run, device, sampler=ddp.ShardSampler(len(val_set), ctx)) if val_set is not None else None
        else:
            sampler = EpochSampler(len(train_set), run.seed, shuffle=True, with_seeds=with_seeds)
            train_loader = make_loader(train_set, optim.batch_size, run, device, sampler=sampler)
            val_loader = make_loader(val_set, optim.batch_size, run, device) if val_set is not None else None

        # ---- 4. loss ---------------------------------------------------------------------------
        weight: torch.Tensor | None = None
        num_classes: int | None = None
        if task == "classification":
            if isinstance(class_weights, torch.Tensor):
                weight = class_weights.float().to(device)
                num_classes = int(weight.numel())
            else:
                num_classes = getattr(model, "num_classes", None)
                labels: list[int] = []
                if class_weights != "none" or num_classes is None:  # read the training labels (no images)
                    labels = [int(t) for t in dataset_targets(train_set)]
                num_classes = int(num_classes or max(labels) + 1)
                weight = class_weights_from_labels(labels, num_classes, class_weights)
                weight = weight.to(device) if weight is not None else None
            if positive_index is None and num_classes == 2:
                positive_index = 1

        def loss_fn(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
            if task == "regression":
                return F.mse_loss(logits.float(), y.float())
            if soft is not None:
                return distillation_loss(logits, soft, y, alpha=distill.alpha, temperature=distill.temperature, weight=weight)
            return weighted_cross_entropy(logits, y, weight)

        # ---- 5. optimiser and schedule -----------------------------------------------------------
        optimizer = build_optimizer(model, optim)
        scheduler = build_scheduler(optimizer, optim)

        # ---- 6. resume -------------------------------------------------------------------------
        fingerprint = {"optim": optim.model_dump(exclude={"epochs", "max_batches_per_epoch"}), "task": task, "seed": run.seed}
        start_epoch, history, resumed_from = 0, [], None
        best: dict[str, Any] = {"score": None, "epoch": None, "state": None}
        found = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None and resume else None
        if found is not None:
            path, ckpt = found
            if ckpt["extra"].get("fingerprint") != fingerprint:
                raise ConfigError(f"{path}: checkpoint was written with other training settings; use a new checkpoint folder or resume=False")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            sampler.load_state_dict(ckpt["sampler"])
            history = list(ckpt["extra"]["history"])
            best = dict(ckpt["extra"]["best"])
            set_rng_state(ckpt["rng"])
            start_epoch = resumed_from = int(ckpt["epoch"])
            start_epoch += 1
            log.info("resuming from %s (epoch %d of %d completed)", path, start_epoch, optim.epochs)
        ddp.check_same_on_all_ranks(start_epoch, "the epoch to resume from", ctx)

        # the module the training steps call: DDP (gradients averaged over the ranks) or the model itself
        memory_format_set = False
        if ctx.enabled:
            if on_gpu:  # DDP's gradient buckets follow the parameters' layout: set channels-last before wrapping
                fmt = channels_last_format(train_set[0][0].unsqueeze(0))
                if fmt is not None:
                    model.to(memory_format=fmt)
                    if teachers is not None:
                        teachers.to(memory_format=fmt)
                memory_format_set = True
            step_model = ddp.data_parallel(model, device, find_unused_parameters=bool(gates))
            forward = lambda x: step_model(x)  # noqa: E731
            forward_with_aux = lambda x: step_model(x, with_aux=True)  # noqa: E731
        else:
            forward, forward_with_aux = model, getattr(model, "forward_with_aux", None)

        # ---- 7. epochs ---------------------------------------------------------------------------
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else contextlib.nullcontext
        for epoch in range(start_epoch, optim.epochs):
            sampler.set_epoch(epoch)
            active = active_gate_index(gates) if gates else 0  # the stage being trained this epoch
            model.train()
            lr = optimizer.param_groups[0]["lr"]
            loss_sum = torch.zeros((), device=device)
            seen = 0
            for x, y in itertools.islice(train_loader, optim.max_batches_per_epoch):  # None: the whole epoch
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if on_gpu:  # channels-last (3D: channels_last_3d) memory layout for the tensor cores
                    fmt = channels_last_format(x)
                    if fmt is not None:
                        x = x.contiguous(memory_format=fmt)
                        if not memory_format_set:
                            model.to(memory_format=fmt)
                            if teachers is not None:
                                teachers.to(memory_format=fmt)
                            memory_format_set = True
                with determinism.watch():
                    with autocast():
                        soft = teachers(x) if teachers is not None else None  # same augmented batch, no grad
                        if use_aux:
                            logits, aux = forward_with_aux(x)
                            loss = loss_fn(logits, y, soft)
                            aux_logits = as_aux_list(aux, len(gates))[active]  # the active gate's auxiliary head
                            loss = loss + lambda_aux * weighted_cross_entropy(aux_logits, y, weight)
                        else:
                            loss = loss_fn(forward(x), y, soft)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                loss_sum += loss.detach() * y.shape[0]
                seen += y.shape[0]
            scheduler.step()
            if seen == 0:
                raise ConfigError("the training set produced no batch (is it empty?)")
            if ctx.enabled:  # the loss over every rank's samples; every rank validates (and saves) rank 0's buffers
                totals = ddp.all_reduce_sum(torch.stack([loss_sum.float(), torch.tensor(float(seen), device=device)]), ctx)
                loss_sum, seen = totals[0], float(totals[1])
                ddp.broadcast_buffers(model, ctx)
            metrics: dict[str, float] = {"epoch": float(epoch), "lr": float(lr), "train_loss": float(loss_sum) / seen}

            # validation, then the active Control Gate Block's update from its own head's sensitivity
            if val_loader is not None:
                metrics.update(validate(model, val_loader, device, task, loss_fn, use_aux, positive_index, num_classes, autocast,
                                        n_gates=len(gates) or None, ctx=ctx))  # fmt: skip
            if gates:
                # stage-wise: only the gate of the stage trained this epoch, fed head `active`'s sensitivity
                metrics["val_aux_sensitivity"] = metrics[f"val_aux_sensitivity_{active}"]
                metrics["gate_active"] = float(active)
                gates[active].update(metrics["val_aux_sensitivity"])
                for i, gate in enumerate(gates):
                    metrics[f"gate_open_{i}"] = float(bool(gate.is_open))
                metrics["gate_open"] = float(all(bool(g.is_open) for g in gates))

            # keep the best by validation when asked (the last epoch's weights otherwise)
            if keep == "best":
                score = -metrics["val_loss"] if task == "regression" or math.isnan(metrics.get("val_auroc", math.nan)) else metrics["val_auroc"]
                if best["score"] is None or score > best["score"]:
                    best = {"score": score, "epoch": epoch, "state": cpu_state(model)}
            metrics["peak_rss_mb"] = peak_rss_mb()
            history.append(metrics)

            if checkpoint_dir is not None:
                if ctx.is_main:  # rank 0 alone writes; the others wait, so a restart finds this epoch's checkpoint
                    save_checkpoint(
                        checkpoint_dir, epoch, model=model, optimizer=optimizer, scheduler=scheduler, scaler=None,
                        sampler_state=sampler.state_dict(),
                        extra={"history": history, "best": best, "fingerprint": fingerprint},
                    )  # fmt: skip
                ddp.barrier(ctx)
            if ctx.is_main:
                if callback is not None:
                    callback(dict(metrics))
                log.info("epoch %d/%d %s", epoch + 1, optim.epochs, " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))

        # ---- 8. result ---------------------------------------------------------------------------
        gate_opened: bool | None = None
        gate_epoch: int | None = None
        if gates:
            gate_opened = all(bool(g.is_open) for g in gates)
            gate_epoch = next((int(h["epoch"]) for h in history if h.get("gate_open", 0.0) >= 1.0), None)
            if not gate_opened:
                msg = "the Control Gate Block never opened: stage II and the main head were not trained (lower ths_sens/ths_count or train longer)"
                log.warning(msg)
                report.append(msg)
        if keep == "best" and best["state"] is not None:
            state, best_epoch = best["state"], best["epoch"]
        else:
            state, best_epoch = cpu_state(model), (len(history) - 1 if history else None)
        card = getattr(model, "card", None)
        if gates and card is not None and hasattr(card, "gate_opened"):
            # the model card records whether the weights kept were trained with every gate open
            kept_open = bool(history[best_epoch].get("gate_open", 0.0) >= 1.0) if best_epoch is not None else False
            card.gate_opened = kept_open
            if gate_opened and not kept_open:
                msg = f"keep={keep} kept epoch {best_epoch}, before every Control Gate Block had opened (stage II untrained in those weights)"
                log.warning(msg)
                report.append(msg)
        if sync_bn is not None:
            sync_bn.restore()  # the caller's model keeps its BatchNorm classes
        ops = sorted(determinism.nondeterministic_ops)
        if ops:
            report.append(f"no deterministic kernel on {device.type} for: {', '.join(ops)} (results may vary run to run)")
        return TrainResult(
            state_dict=state,
            history=history,
            kept=keep,
            best_epoch=best_epoch,
            gate_opened=gate_opened,
            gate_opened_epoch=gate_epoch,
            resumed_from=resumed_from,
            device=str(device),
            deterministic=run.deterministic,
            nondeterministic_ops=ops,
            warnings=report,
            peak_rss_mb=peak_rss_mb(),
            peak_gpu_mb=torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None,
        )


# ================================================================================= the pieces
def validate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    task: Task,
    loss_fn: Callable[..., torch.Tensor],
    use_aux: bool,
    positive_index: int | None,
    num_classes: int | None,
    autocast: Callable[[], Any],
    n_gates: int | None = None,
    ctx: ddp.DistributedContext | None = None,
) -> dict[str, float]:
    """One pass over the validation set: loss (hard labels), AUROC, sensitivity, and the sensitivity of
    every auxiliary head (``val_aux_sensitivity_<i>``, one per gate when ``n_gates`` is given).

    With several ranks (``ctx``) each rank passes over its shard (:class:`~covidscan.training.distributed.ShardSampler`)
    and the outputs are gathered in dataset order before any metric: every rank gets the metrics of the
    whole set (the Control Gate Block opens on them).
    """
    ctx = ctx or ddp.DistributedContext()
    model.eval()
    outputs, targets, aux_outputs = [], [], []
    with torch.no_grad(), autocast():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if device.type == "cuda" and channels_last_format(x) is not None:
                x = x.contiguous(memory_format=channels_last_format(x))
            if use_aux:
                logits, aux = model.forward_with_aux(x)
                aux_outputs.append([a.float().cpu() for a in as_aux_list(aux, n_gates)])
            else:
                logits = model(x)
            outputs.append(logits.float().cpu())
            targets.append(y)
    model.train()
    out, y = torch.cat(outputs), torch.cat(targets)
    n = len(loader.dataset)  # type: ignore[arg-type]
    out, y = ddp.gather_in_order(out, n, ctx), ddp.gather_in_order(y, n, ctx)
    metrics = {"val_loss": float(loss_fn(out, y, None))}
    if task == "regression":
        metrics["val_mae"] = float((out - y.float()).abs().mean())
        return metrics
    probs = torch.softmax(out, dim=1)
    metrics["val_auroc"] = auroc(probs, y, positive_index)
    metrics["val_sensitivity"] = sensitivity(probs.argmax(dim=1), y, num_classes or probs.shape[1], positive_index)
    if use_aux:
        n_aux = len(aux_outputs[0])
        for i in range(n_aux):
            aux_pred = ddp.gather_in_order(torch.cat([batch[i] for batch in aux_outputs]), n, ctx).argmax(dim=1)
            metrics[f"val_aux_sensitivity_{i}"] = sensitivity(aux_pred, y, num_classes or probs.shape[1], positive_index)
        metrics["val_aux_sensitivity"] = metrics["val_aux_sensitivity_0"]  # train() replaces it by the active gate's head
    return metrics


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class DeterministicMode:
    """Deterministic algorithms for the duration of a training run (restored afterwards).

    On the CPU every op must be deterministic (an op without a deterministic kernel raises). On CUDA
    PyTorch lacks deterministic kernels for some backward passes (e.g. 3D max-pool, adaptive pooling):
    warn-only mode is used there and the ops that warned are collected in ``nondeterministic_ops``.
    """

    _MARK = "does not have a deterministic implementation"

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled = enabled
        self.device = device
        self.nondeterministic_ops: set[str] = set()

    def __enter__(self) -> "DeterministicMode":
        self._saved = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        if self.enabled:
            if self.device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        return self

    def __exit__(self, *exc: Any) -> None:
        enabled, warn_only, cudnn_det, cudnn_bench = self._saved
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Record ops that warn about a missing deterministic kernel; other warnings pass through."""
        if not (self.enabled and self.device.type == "cuda"):
            yield
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            text = str(w.message)
            if self._MARK in text:
                op = text.split(self._MARK)[0].strip()
                if op not in self.nondeterministic_ops:
                    log.warning("deterministic mode: %s has no deterministic CUDA kernel", op)
                self.nondeterministic_ops.add(op)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def make_loader(dataset: Dataset, batch_size: int, run: RunConfig, device: torch.device, sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader that keeps the GPU fed: worker processes, pinned memory on CUDA, persistent workers.

    A training loader drops a last batch of a single sample (BatchNorm cannot train on it).
    """
    workers = run.num_workers
    drop_last = sampler is not None and isinstance(sampler, (EpochSampler, ddp.ShardedEpochSampler))  # training loaders only
    n = len(sampler) if drop_last else len(dataset)  # a rank's shard with several ranks
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last and n % batch_size == 1 and n > 1,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(run.seed),  # worker seeds never touch the global RNG
    )


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam, per ``cfg.optimizer``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def channels_last_format(x: torch.Tensor) -> torch.memory_format | None:
    """channels_last for 4D (N, C, H, W), channels_last_3d for 5D (N, C, D, H, W), None otherwise."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state_dict (contiguous, so it saves compactly)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
