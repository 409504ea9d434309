"""What the training loop expects of a model: protocols, so any model with this interface plugs in.

- Every classifier: ``forward(x) -> logits`` (B, C); a regressor: ``forward(x) -> (B, K)``.
- A model with a Control Gate Block (CNNCF and the teachers) also has
  ``forward_with_aux(x) -> (logits, aux_logits)`` where ``aux_logits`` is the auxiliary head's (B, C)
  output on the stage-I features, or a sequence of them (one per gate, Q > 1), and contains one or more
  gate modules (found anywhere in ``model.modules()``) with ``is_open`` and ``update(sensitivity) -> bool``.
  The gate's state lives in buffers, so it is saved with the state_dict and restored on resume.

The loop computes the auxiliary head's validation sensitivity after every validation pass and calls
``gate.update(sensitivity)``; the gate applies its own thresholds (ths_sens, ths_count).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class ControlGate(Protocol):
    """A Control Gate Block: a counter of consecutive validation passes with sensitivity >= ths_sens."""

    @property
    def is_open(self) -> bool: ...

    def update(self, sensitivity: float) -> bool:
        """Feed one validation pass's auxiliary sensitivity; returns whether the gate is open afterwards."""
        ...


@runtime_checkable
class AuxiliaryClassifier(Protocol):
    """A classifier with an auxiliary head (CNNCF): ``forward_with_aux(x) -> (logits, aux_logits)``."""

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | Sequence[torch.Tensor]]: ...


def find_gates(model: nn.Module) -> list[nn.Module]:
    """The Control Gate Blocks inside ``model`` in module order (empty for a model without gates)."""
    return [m for m in model.modules() if m is not model and isinstance(m, ControlGate)] + (
        [model] if isinstance(model, ControlGate) else []
    )


def has_aux(model: nn.Module) -> bool:
    """Whether the model exposes ``forward_with_aux``."""
    return isinstance(model, AuxiliaryClassifier)


def as_aux_list(aux: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Normalise ``aux_logits`` (one tensor or one per gate) to a list."""
    return [aux] if isinstance(aux, torch.Tensor) else list(aux)
