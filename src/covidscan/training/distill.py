"""Teacher ensembles for knowledge distillation (SPEC section 3, "Distillation").

Each teacher architecture (TS1..TS4) is trained with 5-fold cross-validation, so a teacher is a set of
fold models. Its output for a batch is the mean of its fold models' temperature-softened probabilities
``softmax(z / T)`` (``teacher_mode="mean_folds"``) or that of its best fold by CV AUROC
(``"best_fold"``). The teachers are then fused by a plain mean (``fusion="mean"``) or by a mean
weighted by each teacher's CV AUROC (``"auroc_weighted"``: the mean of its folds' AUROCs, or its best
fold's AUROC in best-fold mode), weights normalised to sum to 1.

A fold model whose Control Gate Block never opened (its card says ``gate_opened`` False, or, without
that record, its gate buffers are closed) has an untrained stage II and head: :func:`usable_teachers`
leaves it out of the fusion (and says which), and :class:`TeacherEnsemble` refuses it.

The fused probabilities are computed ONLINE, without gradients, on the very batch (after augmentation)
the student sees: the training loop calls ``teachers(x)`` with the student's input. (The authors'
code cached teacher logits on a shuffled loader and misaligned them with the student's samples.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from covidscan.config import DistillConfig
from covidscan.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherFolds:
    """A task's saved teacher fold models, per teacher in fold order.

    Attributes:
        models: teacher -> its fold models.
        aurocs: teacher -> its folds' CV AUROCs (a missing or NaN AUROC -> 0.5, chance).
        folds: teacher -> its fold numbers.
    """

    models: dict[str, list[nn.Module]] = field(default_factory=dict)
    aurocs: dict[str, list[float]] = field(default_factory=dict)
    folds: dict[str, list[int]] = field(default_factory=dict)


def load_teacher_folds(directory: Path, names: Sequence[str], cv: Mapping[str, Mapping[str, Sequence]]) -> TeacherFolds:
    """The non-empty ``<directory>/<TS>-f<k>.pt`` fold models of each teacher in ``names`` (a 0-byte file
    marks an unconfigured fold), with their fold AUROCs from ``cv`` (teacher -> ``folds``, ``fold_auroc``:
    the aggregate_cv weights of this task)."""
    from covidscan.models.zoo import load_model

    out = TeacherFolds()
    for name in names:
        info = cv.get(name, {})
        by_fold = dict(zip(info.get("folds", []), info.get("fold_auroc", [])))
        for path in sorted(Path(directory).glob(f"{name}-f*.pt"), key=lambda p: int(p.stem.rsplit("-f", 1)[1])):
            if path.stat().st_size == 0:
                continue  # marker of an unconfigured fold
            fold = int(path.stem.rsplit("-f", 1)[1])
            out.models.setdefault(name, []).append(load_model(path))
            out.folds.setdefault(name, []).append(fold)
            value = by_fold.get(fold)
            out.aurocs.setdefault(name, []).append(0.5 if value is None or not math.isfinite(value) else float(value))
    return out


def softened_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)`` in float32."""
    return torch.softmax(logits.float() / temperature, dim=1)


def best_fold_index(fold_aurocs: Sequence[float]) -> int:
    """Index of the fold with the highest CV AUROC (the first on ties)."""
    if not fold_aurocs:
        raise ConfigError("best_fold teacher mode needs the folds' CV AUROCs")
    return max(range(len(fold_aurocs)), key=lambda i: (fold_aurocs[i], -i))


def teacher_probs(
    fold_logits: Sequence[torch.Tensor], temperature: float, mode: str = "mean_folds", fold_aurocs: Sequence[float] | None = None
) -> torch.Tensor:
    """One teacher's probabilities from its fold models' logits.

    Args:
        fold_logits: one (B, C) logits tensor per fold model.
        temperature: T.
        mode: "mean_folds" (mean of the folds' softened probabilities) or "best_fold".
        fold_aurocs: the folds' CV AUROCs (required for "best_fold").
    """
    if not fold_logits:
        raise ConfigError("a teacher needs at least one fold model")
    if mode == "best_fold":
        if fold_aurocs is None or len(fold_aurocs) != len(fold_logits):
            raise ConfigError("best_fold teacher mode needs one CV AUROC per fold model")
        return softened_probs(fold_logits[best_fold_index(fold_aurocs)], temperature)
    if mode != "mean_folds":
        raise ConfigError(f"train.distill.teacher_mode must be 'mean_folds' or 'best_fold', got {mode!r}")
    return torch.stack([softened_probs(z, temperature) for z in fold_logits]).mean(dim=0)


def fuse_teacher_probs(
    per_teacher: Sequence[torch.Tensor], fusion: str = "mean", teacher_aurocs: Sequence[float] | None = None
) -> torch.Tensor:
    """Fuse the teachers' probabilities: plain mean, or mean weighted by CV AUROC.

    Args:
        per_teacher: one (B, C) probability tensor per teacher.
        fusion: "mean" or "auroc_weighted".
        teacher_aurocs: one CV AUROC per teacher (required for "auroc_weighted").
    """
    if not per_teacher:
        raise ConfigError("distillation needs at least one teacher")
    stacked = torch.stack(list(per_teacher))  # (n_teachers, B, C)
    if fusion == "mean":
        return stacked.mean(dim=0)
    if fusion != "auroc_weighted":
        raise ConfigError(f"train.distill.fusion must be 'mean' or 'auroc_weighted', got {fusion!r}")
    if teacher_aurocs is None or len(teacher_aurocs) != len(per_teacher):
        raise ConfigError("auroc_weighted fusion needs one CV AUROC per teacher")
    weights = torch.as_tensor(teacher_aurocs, dtype=stacked.dtype, device=stacked.device)
    if bool((weights < 0).any()) or float(weights.sum()) <= 0:
        raise ConfigError(f"teacher CV AUROCs must be non-negative with a positive sum, got {list(teacher_aurocs)}")
    weights = weights / weights.sum()
    return (weights[:, None, None] * stacked).sum(dim=0)


def gate_status(model: nn.Module) -> bool | None:
    """Whether a model's Control Gate Blocks opened: its card's ``gate_opened`` record, else its gate
    buffers (``gate_open``), else None (a model without a gate)."""
    card = getattr(model, "card", None)
    recorded = getattr(card, "gate_opened", None)
    if recorded is not None:
        return bool(recorded)
    state = getattr(model, "gate_open", None)
    return None if state is None else bool(state)


def usable_teachers(
    teachers: Mapping[str, Sequence[nn.Module]], fold_aurocs: Mapping[str, Sequence[float]] | None = None
) -> tuple[dict[str, list[nn.Module]], dict[str, list[float]] | None, list[tuple[str, int]]]:
    """Leave out the fold models whose Control Gate Block never opened.

    Args:
        teachers: teacher name -> its fold models (fold order).
        fold_aurocs: teacher name -> one CV AUROC per fold model (kept aligned), or None.

    Returns:
        (the teachers with their usable fold models, a teacher with none left is dropped; their AUROCs
        or None; (teacher, position in ``teachers[teacher]``) of each fold model left out).
    """
    kept: dict[str, list[nn.Module]] = {}
    kept_aurocs: dict[str, list[float]] = {}
    left_out: list[tuple[str, int]] = []
    for name, models in teachers.items():
        scores = list(fold_aurocs[name]) if fold_aurocs is not None and name in fold_aurocs else None
        for i, model in enumerate(models):
            if gate_status(model) is False:
                left_out.append((name, i))
                log.warning("teacher %s fold model %d: its Control Gate Block never opened; left out of the fused soft labels", name, i)
                continue
            kept.setdefault(name, []).append(model)
            if scores is not None:
                kept_aurocs.setdefault(name, []).append(scores[i])
    return kept, (kept_aurocs if fold_aurocs is not None else None), left_out


class TeacherEnsemble(nn.Module):
    """The loaded teachers' fold models, always in eval mode, producing fused soft probabilities.

    ``ensemble(x)`` returns the (B, C) fused ``p_teachers`` for the student's batch ``x``, computed
    without gradients. ``.train()`` is ignored: BatchNorm statistics of a teacher never change.

    Args:
        teachers: teacher name -> its fold models (in fold order).
        cfg: temperature, fusion and teacher mode.
        fold_aurocs: teacher name -> the CV AUROC of each fold model (needed for "best_fold" and
            "auroc_weighted").
    """

    def __init__(
        self,
        teachers: Mapping[str, Sequence[nn.Module]],
        cfg: DistillConfig,
        fold_aurocs: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if not teachers:
            raise ConfigError("distillation needs at least one teacher (models.teachers is empty?)")
        self.temperature = float(cfg.temperature)
        self.fusion = cfg.fusion
        self.teacher_mode = cfg.teacher_mode
        self.names = list(teachers)
        needs_aurocs = cfg.fusion == "auroc_weighted" or cfg.teacher_mode == "best_fold"
        if needs_aurocs:
            missing = [n for n in self.names if fold_aurocs is None or n not in fold_aurocs]
            if missing:
                raise ConfigError(f"fusion={cfg.fusion}, teacher_mode={cfg.teacher_mode} need CV AUROCs for teachers {missing}")
        self.teacher_aurocs: list[float] | None = None
        folds: dict[str, nn.ModuleList] = {}
        aurocs: list[float] = []
        for name in self.names:
            models = list(teachers[name])
            if not models:
                raise ConfigError(f"teacher {name} has no fold models")
            closed = [i for i, m in enumerate(models) if gate_status(m) is False]
            if closed:
                raise ConfigError(
                    f"teacher {name}: fold model(s) {closed} never opened their Control Gate Block (untrained stage II); "
                    "leave them out with covidscan.training.distill.usable_teachers"
                )
            scores = list(fold_aurocs[name]) if fold_aurocs is not None and name in fold_aurocs else None
            if scores is not None and len(scores) != len(models):
                raise ConfigError(f"teacher {name}: {len(models)} fold models but {len(scores)} CV AUROCs")
            if cfg.teacher_mode == "best_fold":
                best = best_fold_index(scores)  # type: ignore[arg-type]
                models, scores = [models[best]], [scores[best]]  # type: ignore[index]
            folds[name] = nn.ModuleList(models)
            if scores is not None:
                aurocs.append(sum(scores) / len(scores))
        if needs_aurocs:
            self.teacher_aurocs = aurocs
        self.folds = nn.ModuleDict(folds)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "TeacherEnsemble":  # noqa: ARG002 - teachers stay in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_teacher = []
        for name in self.names:
            logits = [model(x) for model in self.folds[name]]
            # best_fold already kept one model; mean_folds averages the folds' softened probabilities
            per_teacher.append(teacher_probs(logits, self.temperature, "mean_folds"))
        return fuse_teacher_probs(per_teacher, self.fusion, self.teacher_aurocs)

    @classmethod
    def from_checkpoints(
        cls,
        entries: Sequence[tuple[str, str | Path, float | None]],
        build: Callable[[str], nn.Module],
        cfg: DistillConfig,
    ) -> "TeacherEnsemble":
        """Load fold models from state_dict files (``torch.load(weights_only=True)``).

        Args:
            entries: (teacher name, state_dict path, fold CV AUROC or None), in fold order.
            build: teacher name -> a fresh model of that architecture (e.g. a closure over
                ``covidscan.models.zoo.build_model``).
            cfg: the distillation settings.
        """
        teachers: dict[str, list[nn.Module]] = {}
        aurocs: dict[str, list[float]] = {}
        for name, path, auroc in entries:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"teacher weights {path} not found (train the teacher folds first)")
            model = build(name)
            state = torch.load(path, map_location="cpu", weights_only=True)
            if "model" in state and isinstance(state["model"], dict):  # a training checkpoint, not bare weights
                state = state["model"]
            model.load_state_dict(state)
            teachers.setdefault(name, []).append(model)
            if auroc is not None:
                aurocs.setdefault(name, []).append(float(auroc))
        return cls(teachers, cfg, aurocs or None)
