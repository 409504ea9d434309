"""What the training loop expects of a model: protocols, so any model with this interface plugs in.

- Every classifier: ``forward(x) -> logits`` (B, C); a regressor: ``forward(x) -> (B, K)``.
- A model with Control Gate Blocks (CNNCF and the teachers) also has
  ``forward_with_aux(x) -> (logits, aux_logits)`` where ``aux_logits`` holds one auxiliary head's (B, C)
  output per gate, in gate order (one tensor alone is accepted for a model with a single gate), and
  contains one or more gate modules (found anywhere in ``model.modules()``, in module order) with
  ``is_open`` and ``update(sensitivity) -> bool``. The gate's state lives in buffers, so it is saved
  with the state_dict and restored on resume.

Stage-wise training (SPEC.md section 3, Control Gate Block): the *active* gate is the first closed one
(:func:`active_gate_index`). Only its auxiliary head is in the loss, and after every validation pass
only it is fed, and only with the validation sensitivity of its own head; so gate i + 1 cannot open
before gate i, and each gate opens on its own head's sensitivity. The gate applies its own
thresholds (ths_sens, ths_count).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from covidscan.errors import ConfigError


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


def as_aux_list(aux: torch.Tensor | Sequence[torch.Tensor], n_gates: int | None = None) -> list[torch.Tensor]:
    """Normalise ``aux_logits`` (one tensor or one per gate) to a list, one head per gate.

    Args:
        aux: what ``forward_with_aux`` returned as auxiliary logits.
        n_gates: the model's number of gates; when given, the heads must match them one to one.

    Raises:
        ConfigError: ``n_gates`` given and the number of heads differs (gate i could not be fed head i).
    """
    heads = [aux] if isinstance(aux, torch.Tensor) else list(aux)
    if n_gates is not None and len(heads) != n_gates:
        raise ConfigError(
            f"forward_with_aux returned {len(heads)} auxiliary head(s) for {n_gates} Control Gate Blocks; "
            "return one head per gate, in gate order, so each gate follows its own head"
        )
    return heads


def active_gate_index(gates: Sequence[nn.Module]) -> int:
    """Index of the first closed gate (the stage being trained), or the last gate when all are open."""
    for i, gate in enumerate(gates):
        if not gate.is_open:
            return i
    return len(gates) - 1
