"""Ground truth written alongside the images: expert boxes, reader reads, clinical indicators.

- Boxes: the adjudicated box of a lesion is centred on it and as large as its (projected or sliced)
  extent, clipped to 16-64 px at 512 px (scaled to the image size); each of two readers draws it with
  jitter. 1-2 boxes per X-ray; 2-5 annotated slices per CT case.
- Reads: five simulated readers call covid19 (1) or not (0) with the sensitivity/specificity of seed
  000 Table 2 (experiment A).
- Clinical indicators (CNNRF targets): each is an affine function of the case's lesion burden plus
  noise, built so that its Pearson correlation with the burden equals ``sign x correlation`` in the
  sample (the noise is made orthogonal to the burden); clipping at physiological limits and rounding
  move it a little, so the realised values are recorded too.
"""

from __future__ import annotations

import math

import numpy as np

# name -> (sensitivity, specificity), Liang et al. 2020, Table 2 (X-ray, covid19 vs normal)
READERS: dict[str, tuple[float, float]] = {
    "Respira.": (1.0, 0.9667),
    "Emerg.": (1.0, 0.9467),
    "Intern": (0.9355, 0.8867),
    "Rad-5th": (1.0, 0.9867),
    "Rad-3rd": (0.9355, 0.9000),
}

# indicator -> (mean, sd, sign of the correlation with burden, floor, ceiling, decimals), covid19 cases.
# Units: wbc 10^9/L, percentages, procalcitonin ng/mL, crp mg/L. Values are assumed, typical of
# reports on hospitalised COVID-19 patients (lymphopenia and CRP rise with lung involvement).
CLINICAL: dict[str, tuple[float, float, int, float, float, int]] = {
    "wbc": (5.8, 1.6, +1, 1.0, 30.0, 2),
    "neutrophil_pct": (68.0, 8.0, +1, 30.0, 98.0, 1),
    "lymphocyte_pct": (22.0, 7.0, -1, 2.0, 60.0, 1),
    "procalcitonin": (0.15, 0.05, +1, 0.02, 10.0, 3),
    "crp": (30.0, 12.0, +1, 0.5, 300.0, 1),
}
INDICATORS = tuple(CLINICAL)
ANNOTATORS = ("reader1", "reader2", "adjudicated")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (pixels, x = column, inclusive-exclusive)


def box_limits(size: int) -> tuple[float, float]:
    """Box side limits (px) for an image of ``size`` px: 16-64 px at 512 px, scaled (at least 2 px)."""
    return max(2.0, 16.0 * size / 512.0), max(3.0, 64.0 * size / 512.0)


def make_box(cx: float, cy: float, half_w: float, half_h: float, rows: int, cols: int) -> Box:
    """A box centred on (cx, cy) (pixels), side clipped to the size limits and to the image."""
    lo, hi = box_limits(max(rows, cols))
    w = float(np.clip(2 * half_w, lo, hi))
    h = float(np.clip(2 * half_h, lo, hi))
    x0 = int(np.clip(round(cx - w / 2), 0, cols - 1))
    y0 = int(np.clip(round(cy - h / 2), 0, rows - 1))
    x1 = int(np.clip(round(cx + w / 2), x0 + 1, cols))
    y1 = int(np.clip(round(cy + h / 2), y0 + 1, rows))
    return x0, y0, x1, y1


def jitter_box(box: Box, rng: np.random.Generator, rows: int, cols: int, amount: float = 0.12) -> Box:
    """A reader's version of an adjudicated box: shifted and rescaled by ~``amount`` of its size."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2 + rng.normal(0, amount * w)
    cy = (y0 + y1) / 2 + rng.normal(0, amount * h)
    s = math.exp(rng.normal(0, amount))
    return make_box(cx, cy, w * s / 2, h * s / 2, rows, cols)


def reader_calls(label: str, rng: np.random.Generator) -> dict[str, int]:
    """Five readers' binary covid19 calls for one case."""
    calls = {}
    for name, (sens, spec) in READERS.items():
        u = rng.random()
        calls[name] = int(u < sens) if label == "covid19" else int(u >= spec)
    return calls


def clinical_values(burdens: np.ndarray, correlation: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The five indicators for a group of cases, correlated with their burden.

    Args:
        burdens: lesion burden of each case (n >= 3 for an exact correlation).
        correlation: the stated |Pearson r| between each indicator and the burden.
        rng: the group's random stream.
    """
    b = np.asarray(burdens, dtype=np.float64)
    n = len(b)
    sd = b.std()
    z = (b - b.mean()) / sd if sd > 0 else np.zeros(n)
    out: dict[str, np.ndarray] = {}
    for name, (mean, spread, sign, lo, hi, dec) in CLINICAL.items():
        e = rng.normal(0.0, 1.0, n)
        if n >= 3 and sd > 0:
            design = np.stack([np.ones(n), z], axis=1)
            e = e - design @ np.linalg.lstsq(design, e, rcond=None)[0]
            e = e / e.std() if e.std() > 0 else e
            v = correlation * z + math.sqrt(max(0.0, 1.0 - correlation**2)) * e
        else:
            v = e
        out[name] = np.round(np.clip(mean + sign * spread * v, lo, hi), dec)
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r (NaN when either side is constant or there are fewer than 3 points)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
