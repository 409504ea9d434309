"""Class-specific lung lesions with a severity knob (SPEC.md section 1).

- covid19: bilateral, peripheral, multifocal ground-glass opacities: soft-edged, -600 to -300 HU,
  2-5 foci, lower-zone predominance. Severity grows their number, size and density.
- pneumonia: one dense lobar consolidation, 0 to +50 HU, sharp-edged, clipped to one lung.
- influenza: diffuse bilateral patchy opacities around the hila.
- normal: none.

Severity is in [0, 1]; below about 0.35 the burden is small ("mild", as in Yao et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from covidscan.data.synth.phantom import Blob, Phantom

MILD_SEVERITY = 0.35


@dataclass(frozen=True)
class Lesion:
    """One lesion as ground truth: where it is, how big, how dense."""

    kind: str  # "ggo" | "consolidation" | "patch"
    centre: tuple[float, float, float]  # mm (x, y, z)
    radii: tuple[float, float, float]  # mm
    hu: float
    edge: float

    def blob(self) -> Blob:
        return Blob(self.centre, self.radii, self.hu, self.edge)

    @property
    def volume_ml(self) -> float:
        return 4.0 / 3.0 * math.pi * float(np.prod(self.radii)) / 1000.0


def _sample_in_lung(
    phantom: Phantom,
    rng: np.random.Generator,
    side: int,
    radial: tuple[float, float],
    z_frac: tuple[float, float] | str,
    medial: bool = False,
) -> tuple[float, float, float]:
    """A point inside one lung (side 0 = patient right, 1 = left) drawn in lung-normalised coordinates.

    Args:
        radial: range of the in-plane normalised radius (1 = the lung ellipse outline).
        z_frac: range of height as a fraction of the lung height, or "lower" for a lower-zone bias.
        medial: keep the angle on the hilar (medial) side.
    """
    lung = phantom.lungs[side]  # type: ignore[index]
    (cx, cy, _), (rx, ry, _) = lung.centre, lung.radii
    h = phantom.lung_height
    toward_mid = 1.0 if side == 0 else -1.0  # the right lung (-x) has the mediastinum at +x
    for _ in range(8):
        n = 64
        r = rng.uniform(radial[0], radial[1], n)
        if medial:
            ang = rng.uniform(-0.45 * math.pi, 0.45 * math.pi, n)
            px = cx + toward_mid * r * rx * np.cos(ang)
        else:
            ang = rng.uniform(0, 2 * math.pi, n)
            px = cx + r * rx * np.cos(ang)
        py = cy + r * ry * np.sin(ang)
        if z_frac == "lower":
            zf = 0.05 + 0.85 * rng.beta(1.4, 2.6, n)
        else:
            zf = rng.uniform(z_frac[0], z_frac[1], n)  # type: ignore[index]
        pz = zf * h
        pts = np.stack([px, py, pz], axis=1)
        ok = np.flatnonzero(phantom.in_lung(pts))
        if len(ok):
            p = pts[ok[0]]
            return float(p[0]), float(p[1]), float(p[2])
    # very unlikely: fall back to the lung centre at mid height
    return float(cx), float(cy), 0.45 * h


def sample_lesions(label: str, severity: float, phantom: Phantom, rng: np.random.Generator) -> list[Lesion]:
    """Draw the lesions of one case.

    Args:
        label: "normal" | "pneumonia" | "covid19" | "influenza".
        severity: 0-1 knob (ignored for normal).
        phantom: the patient's anatomy (lesions are placed inside its lungs).
        rng: the case's random stream.
    """
    s = float(np.clip(severity, 0.0, 1.0))
    lesions: list[Lesion] = []
    if label == "covid19":
        n = int(np.clip(2 + round(3 * s + rng.normal(0, 0.6)), 2, 5))
        first = int(rng.integers(0, 2))
        for i in range(n):
            side = (first + i) % 2  # bilateral: alternate lungs
            c = _sample_in_lung(phantom, rng, side, (0.62, 0.9), "lower")
            r = (8.0 + 22.0 * s) * float(rng.uniform(0.8, 1.2))
            radii = (r * float(rng.uniform(0.8, 1.2)), r * float(rng.uniform(0.8, 1.2)), r * float(rng.uniform(0.7, 1.0)))
            hu = float(np.clip(-600.0 + 300.0 * s + rng.normal(0, 40.0), -600.0, -300.0))
            lesions.append(Lesion("ggo", c, radii, hu, edge=0.22))
    elif label == "pneumonia":
        side = int(rng.integers(0, 2))
        lower = bool(rng.random() < 0.65)
        c = _sample_in_lung(phantom, rng, side, (0.15, 0.5), (0.12, 0.38) if lower else (0.55, 0.8))
        lung = phantom.lungs[side]  # type: ignore[index]
        k = 0.3 + 0.4 * s
        radii = (lung.radii[0] * k, lung.radii[1] * k, phantom.lung_height * (0.1 + 0.12 * s))
        hu = float(rng.uniform(0.0, 50.0))
        lesions.append(Lesion("consolidation", c, radii, hu, edge=0.05))
    elif label == "influenza":
        n = int(6 + round(10 * s))
        for i in range(n):
            side = i % 2
            c = _sample_in_lung(phantom, rng, side, (0.15, 0.6), (0.3, 0.78), medial=True)
            r = float(rng.uniform(6.0, 14.0)) * (0.8 + 0.6 * s)
            radii = (r, r * float(rng.uniform(0.7, 1.3)), r * float(rng.uniform(0.8, 1.5)))
            hu = float(np.clip(-550.0 + 200.0 * s + rng.normal(0, 50.0), -650.0, -250.0))
            lesions.append(Lesion("patch", c, radii, hu, edge=0.3))
    elif label != "normal":
        raise ValueError(f"unknown class {label!r}")
    return lesions


def burden(lesions: list[Lesion], phantom: Phantom) -> float:
    """Lesion burden: summed lesion volume, density-weighted, as a fraction of the lung volume.

    The density weight is how far the lesion's HU moves lung tissue towards soft tissue, so one millilitre
    of consolidation weighs more than one of ground glass.
    """
    lung_ml = phantom.lung_volume_ml()
    total = 0.0
    for lesion in lesions:
        weight = (lesion.hu - phantom.lung_hu) / (40.0 - phantom.lung_hu)
        total += lesion.volume_ml * weight
    return float(total / lung_ml) if lung_ml > 0 else 0.0
