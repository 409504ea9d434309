"""The seed's double reading (Liang et al. 2020): pairing the two readers' boxes, the agreement test
and the automatic adjudication rule.

Two readers (``reader1``, ``reader2``) annotate a case independently. Once both have submitted it:

- the boxes are paired one to one, on the same slice, greedily by decreasing IoU, keeping pairs with
  IoU >= ``iou_threshold`` (default 0.5, the usual detection criterion; assumed, the papers do not
  state one);
- the case is **agreed** when every box of either reader has a partner and the two binary COVID-19
  reads are equal; otherwise it is **queued** for a senior, with the reasons (``unpaired_box``,
  ``different_reads``);
- an agreed case is adjudicated automatically by the documented rule :func:`auto_adjudicate`: each
  adjudicated box is the coordinate-wise mean of its pair, and the adjudicated read is the readers'
  common read;
- a queued case is decided by a senior, who sees both readers' boxes and reads and saves the
  adjudicated boxes and read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class BoxT:
    """A box in array pixels (x = column) on a slice (0 for 2D images)."""

    slice_index: int
    x0: float
    y0: float
    x1: float
    y1: float


def iou(a: BoxT, b: BoxT) -> float:
    """Intersection over union of two boxes; 0 for boxes on different slices or without area."""
    if a.slice_index != b.slice_index:
        return 0.0
    iw = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    ih = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = iw * ih
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def pair_boxes(first: Sequence[BoxT], second: Sequence[BoxT], threshold: float = DEFAULT_IOU_THRESHOLD
               ) -> tuple[list[tuple[int, int, float]], list[int], list[int]]:
    """Greedy one-to-one pairing by decreasing IoU.

    Returns:
        (pairs as (index in first, index in second, IoU), unpaired indices of first, of second).
    """
    cand = sorted(((iou(a, b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)), reverse=True)
    used_i: set[int] = set()
    used_j: set[int] = set()
    pairs: list[tuple[int, int, float]] = []
    for value, i, j in cand:
        if value < threshold or value <= 0:
            break
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        pairs.append((i, j, value))
    return (sorted(pairs), [i for i in range(len(first)) if i not in used_i],
            [j for j in range(len(second)) if j not in used_j])


@dataclass
class Comparison:
    """The two readers' work on one case, compared."""

    agreed: bool
    reasons: list[str]
    pairs: list[tuple[int, int, float]]
    unpaired_first: list[int]
    unpaired_second: list[int]
    read_first: int | None
    read_second: int | None
    mean_iou: float = field(default=float("nan"))


def compare(first: Sequence[BoxT], second: Sequence[BoxT], read_first: int | None, read_second: int | None,
            threshold: float = DEFAULT_IOU_THRESHOLD) -> Comparison:
    """Compare reader 1's and reader 2's boxes and reads (see the module's rule)."""
    pairs, un1, un2 = pair_boxes(first, second, threshold)
    reasons = []
    if un1 or un2:
        reasons.append("unpaired_box")
    if read_first is None or read_second is None or read_first != read_second:
        reasons.append("different_reads")
    mean = float(np.mean([p[2] for p in pairs])) if pairs else (1.0 if not first and not second else 0.0)
    return Comparison(not reasons, reasons, pairs, un1, un2, read_first, read_second, mean)


def auto_adjudicate(first: Sequence[BoxT], second: Sequence[BoxT], comparison: Comparison) -> list[BoxT]:
    """The adjudicated boxes of an agreed case: the coordinate-wise mean of each pair."""
    if not comparison.agreed:
        raise ValueError("auto_adjudicate: the case is not agreed; a senior decides it")
    out = []
    for i, j, _ in comparison.pairs:
        a, b = first[i], second[j]
        out.append(BoxT(a.slice_index, (a.x0 + b.x0) / 2, (a.y0 + b.y0) / 2, (a.x1 + b.x1) / 2, (a.y1 + b.y1) / 2))
    return out


def reads_kappa(first: Sequence[int], second: Sequence[int]) -> float:
    """Cohen's kappa of the two readers' binary reads (NaN when undefined; evaluation.metrics' rule)."""
    from covidscan.evaluation.metrics import binary_indices

    if not first:
        return float("nan")
    return float(binary_indices(np.asarray(first, int), np.asarray(second, int))["kappa"])
