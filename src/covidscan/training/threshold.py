"""A trained classifier's operating threshold, chosen on its validation data and kept on its card."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from covidscan.evaluation.summary import OperatingPoint

log = logging.getLogger(__name__)


def set_operating_threshold(model: torch.nn.Module, y_val: Any, scores_val: Any, evaluate: Any, what: str) -> OperatingPoint:
    """Choose the model's operating threshold on its validation data (``evaluate.threshold_rule``,
    :func:`covidscan.evaluation.summary.operating_point`), set it on the model's card
    (:meth:`covidscan.models.card.ModelCard.set_threshold`) and return the OperatingPoint.

    Args:
        model: a model with a card (built by :func:`covidscan.models.zoo.build_model`).
        y_val: validation labels (1 = positive).
        scores_val: the model's positive-class scores on them.
        evaluate: the ``evaluate`` params section.
        what: the model's name in the log line.
    """
    from covidscan.evaluation.summary import operating_point

    point = operating_point(evaluate, np.asarray(y_val), np.asarray(scores_val))
    model.card.set_threshold(point.threshold)  # type: ignore[union-attr]
    log.info("%s: operating threshold %.3f (%s on %d validation cases)%s", what, point.threshold, point.rule, point.n_val,
             f"; {point.note}" if point.note else "")  # fmt: skip
    return point
