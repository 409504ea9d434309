"""What a model object carries besides its weights: its labels, its input spec, its operating threshold.

Following torchxrayvision, a model knows which classes its outputs are, what input it expects
(channels, spatial size, value range, kind) and the threshold it is operated at, so the serving side and
the evaluation never guess. :func:`covidscan.models.zoo.build_model` fills these in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

InputKind = Literal["image2d", "ct_stack", "lesion_crop", "ct_volume"]

__all__ = ["CardMixin", "InputKind", "InputSpec", "ModelCard"]


@dataclass(frozen=True)
class InputSpec:
    """The input a model expects.

    Args:
        channels: input channels (3 for pseudo-coloured images, ct_slices for a CT stack, 1 for volumes).
        size: spatial size, (rows, cols) or (slices, rows, cols).
        value_range: the range preprocessing maps intensities to.
        kind: ``image2d`` (X-ray or 2D CT slice, pseudo-coloured), ``ct_stack`` (dimension-normalised CT
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
    """

    arch: str
    task: Literal["classification", "regression"]
    class_labels: tuple[str, ...]
    input_spec: InputSpec
    threshold: float = 0.5
    build: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "task": self.task,
            "class_labels": list(self.class_labels),
            "input_spec": self.input_spec.to_dict(),
            "threshold": self.threshold,
        }


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
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {value}")
        self.card.threshold = float(value)

    def model_card(self) -> dict[str, Any]:
        """Labels, input spec, threshold and architecture as plain JSON-able data."""
        return self.card.to_dict()


def default_labels(n: int) -> tuple[str, ...]:
    """Placeholder output names ("class_0", ...) until build_model sets the real ones."""
    return tuple(f"class_{i}" for i in range(n))
