"""What a model object carries besides its weights: its labels, its input spec, its operating threshold.

Following torchxrayvision, a model knows which classes its outputs are, what input it expects
(channels, spatial size, value range, kind) and the threshold it is operated at, so the serving side and
the evaluation never guess. A regressor (CNNRF) also carries the :class:`TargetRange` its targets were
min-max normalised with (the training part's min and max), so evaluation, the promotion gate and
serving normalise and de-normalise with exactly that range. :func:`covidscan.models.zoo.build_model`
fills these in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from covidscan.errors import ModelConfigError

InputKind = Literal["image2d", "ct_slice2d", "ct_stack", "lesion_crop", "ct_volume"]

__all__ = ["CardMixin", "InputKind", "InputSpec", "MissingTargetRange", "ModelCard", "TargetRange", "target_range_of"]


class MissingTargetRange(ModelConfigError):
    """A regression model without the target range it was trained with (no other range is substituted)."""


@dataclass(frozen=True)
class TargetRange:
    """The min and max of each regression target over the training part (CNNRF: the five indicators).

    The model predicts ``(value - low) / (high - low)``; a target constant on the training part
    (``high == low``) is scaled by 1, as :mod:`pipelines.train_regressor` does.

    Args:
        names: the targets, in the model's output order (its ``class_labels``).
        low: each target's minimum on the training part.
        high: each target's maximum on the training part.

    Raises:
        ModelConfigError: lengths differ, a value is not finite, or a ``high`` is below its ``low``.
    """

    names: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "low", tuple(float(v) for v in self.low))
        object.__setattr__(self, "high", tuple(float(v) for v in self.high))
        if not (len(self.names) == len(self.low) == len(self.high)) or not self.names:
            raise ModelConfigError(f"target range: {len(self.names)} names, {len(self.low)} minima and {len(self.high)} maxima")
        for name, lo, hi in zip(self.names, self.low, self.high):
            if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
                raise ModelConfigError(f"target range of {name!r}: [{lo}, {hi}] is not a finite interval")

    @property
    def span(self) -> np.ndarray:
        """``high - low`` per target, 1 where the target was constant."""
        d = np.asarray(self.high) - np.asarray(self.low)
        return np.where(d > 0, d, 1.0)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """Raw values (..., k), columns in ``names`` order -> the model's 0-1 scale."""
        return (np.asarray(values, dtype=float) - np.asarray(self.low)) / self.span

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        """Model outputs (..., k) on the 0-1 scale -> raw units."""
        return np.asarray(self.low) + np.asarray(values, dtype=float) * self.span

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TargetRange:
        try:
            return cls(tuple(d["names"]), tuple(d["low"]), tuple(d["high"]))
        except (KeyError, TypeError) as err:
            raise ModelConfigError(f"target range: expected names/low/high lists, got {dict(d)!r} ({err})") from None

    @classmethod
    def of(cls, value: TargetRange | Mapping[str, Any]) -> TargetRange:
        """A range from itself or its :meth:`to_dict` form."""
        return value if isinstance(value, TargetRange) else cls.from_dict(value)

    def rows(self) -> list[dict[str, Any]]:
        """One row per target (``target``, ``min``, ``max``): the model card's table."""
        return [{"target": n, "min": lo, "max": hi} for n, lo, hi in zip(self.names, self.low, self.high)]


def _missing(where: str, arch: str, labels: Sequence[str]) -> MissingTargetRange:
    return MissingTargetRange(
        f"{where}: the {arch or 'regression'} model has no target range (the training part's min/max of {', '.join(labels)}), so its "
        "outputs cannot be normalised or de-normalised; retrain it with pipelines/train_regressor.py (no other range is substituted)"
    )


def target_range_of(card: Mapping[str, Any], where: str) -> TargetRange:
    """The target range of a model card in its dict form (``ModelCard.to_dict()``, a bundle's card).

    Raises:
        MissingTargetRange: the card has none; the message names ``where`` (the model file or version).
    """
    value = card.get("target_range")
    if not value:
        raise _missing(where, str(card.get("arch", "")), list(card.get("class_labels", [])))
    return TargetRange.of(value)


@dataclass(frozen=True)
class InputSpec:
    """The input a model expects.

    Args:
        channels: input channels (3 for pseudo-coloured images, ct_slices for a CT stack, 1 for volumes).
        size: spatial size, (rows, cols) or (slices, rows, cols).
        value_range: the range preprocessing maps intensities to.
        kind: ``image2d`` (an X-ray, pseudo-coloured), ``ct_slice2d`` (one CT slice published as a 2D image,
            pseudo-coloured: the CT-slice task's models), ``ct_stack`` (dimension-normalised CT
            slices as channels), ``lesion_crop`` (CNNRF), ``ct_volume`` (3D networks).
    """

    channels: int
    size: tuple[int, ...]
    value_range: tuple[float, float] = (0.0, 1.0)
    kind: InputKind = "image2d"

    @property
    def shape(self) -> tuple[int, ...]:
        """(channels, *size): one sample without the batch axis."""
        return (self.channels, *self.size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["value_range"] = list(self.value_range)
        return d


@dataclass
class ModelCard:
    """The record every model carries as ``model.card``.

    Args:
        arch: the registry name the model was built from ("student", "TS1", "csacnet", ...).
        task: ``classification`` or ``regression``.
        class_labels: names of the outputs, in order.
        input_spec: what the model expects.
        threshold: operating threshold on the positive-class probability (default 0.5).
        build: the arguments :func:`covidscan.models.zoo.build_model` was called with (JSON-able).
        target_range: regressors: the training part's min/max of each output (None for classifiers).
        gate_opened: whether every Control Gate Block was open in the weights training kept (set by
            :func:`covidscan.training.loop.train`); None: no gate, or not trained by the loop. A model
            whose gate never opened has an untrained stage II and head: distillation leaves such a teacher
            out and the promotion gate refuses it.
    """

    arch: str
    task: Literal["classification", "regression"]
    class_labels: tuple[str, ...]
    input_spec: InputSpec
    threshold: float = 0.5
    build: dict[str, Any] = field(default_factory=dict)
    target_range: TargetRange | None = None
    gate_opened: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "task": self.task,
            "class_labels": list(self.class_labels),
            "input_spec": self.input_spec.to_dict(),
            "threshold": self.threshold,
            "target_range": self.target_range.to_dict() if self.target_range is not None else None,
            "gate_opened": self.gate_opened,
        }

    def set_threshold(self, value: float) -> None:
        """Set the operating threshold: the card's ``threshold`` and its ``build`` record (which
        :func:`covidscan.models.zoo.save_model` writes and the registry rebuilds from). The one way a
        trained model's threshold is set (``model.threshold = t`` calls it).

        Raises:
            ValueError: ``value`` is not in [0, 1].
        """
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {value}")
        self.threshold = float(value)
        if self.build:
            self.build = dict(self.build, threshold=float(value))

    def require_target_range(self, where: str) -> TargetRange:
        """The target range, or :class:`MissingTargetRange` naming ``where`` (the model file or version)."""
        if self.target_range is None:
            raise _missing(where, self.arch, self.class_labels)
        return self.target_range


class CardMixin:
    """Gives a network ``class_labels``, ``input_spec``, ``threshold`` and ``model_card()`` from its card."""

    card: ModelCard

    @property
    def class_labels(self) -> tuple[str, ...]:
        return self.card.class_labels

    @property
    def input_spec(self) -> InputSpec:
        return self.card.input_spec

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        """:meth:`ModelCard.set_threshold` (the card's threshold and its build record)."""
        self.card.set_threshold(value)

    def model_card(self) -> dict[str, Any]:
        """Labels, input spec, threshold and architecture as plain JSON-able data."""
        return self.card.to_dict()


def default_labels(n: int) -> tuple[str, ...]:
    """Placeholder output names ("class_0", ...) until build_model sets the real ones."""
    return tuple(f"class_{i}" for i in range(n))
