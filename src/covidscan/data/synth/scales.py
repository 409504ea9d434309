"""How big each scale of the synthetic dataset is (one small table).

A scale turns the paper-scale counts of :mod:`covidscan.data.synth.sources` into case counts and fixes
the matrix sizes:

- cases per (source, centre, class) = max(minimum, round(paper count x fraction)); with ``fraction`` 0
  every group gets exactly the minimum. Groups that carry clinical indicators get at least
  ``min_clinical`` cases (a correlation needs a few points). ``minimums`` raises chosen groups further
  (``"<modality>/<source>"`` or ``"<modality>/<source>:<class>"`` -> at least n cases): the demo uses it so
  that every experiment's test part (20% of the groups) holds at least 10 cases per class and CAVS at
  least 20 cases, enough for a bootstrap confidence interval.
- CT slices per volume: the paper scale uses the source's real count (scan length / thickness, 66-465);
  smaller scales use clip(round(sqrt(paper count) x factor), lo, hi), so counts still differ by source.
  The geometry stays true (the scan length is kept), so the slice spacing grows when slices are fewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScaleSpec:
    """One scale. See the module docstring for how counts and slices are derived."""

    name: str
    xray_size: int
    ct_size: int
    xray_fraction: float
    ct_fraction: float
    xray_min: int
    ct_min: int
    min_clinical: int
    slices: tuple[float, int, int] | None  # (sqrt factor, min, max); None = the paper's counts
    xray_depth_samples: int
    minimums: tuple[tuple[str, int], ...] = ()

    def cases(self, paper_count: int, modality: str, clinical: bool = False, source: str = "", label: str = "") -> int:
        """Cases of one (source, class) group; ``source`` is the source's key (``ct/youan``)."""
        fraction, minimum = (self.xray_fraction, self.xray_min) if modality == "xray" else (self.ct_fraction, self.ct_min)
        n = max(minimum, int(round(paper_count * fraction)))
        if clinical:
            n = max(n, self.min_clinical)
        for key, least in self.minimums:
            if key in (source, f"{source}:{label}"):
                n = max(n, least)
        return n

    def ct_slices(self, paper_slices: int) -> int:
        if self.slices is None:
            return paper_slices
        factor, lo, hi = self.slices
        return int(min(hi, max(lo, round(math.sqrt(paper_slices) * factor))))


SCALES: dict[str, ScaleSpec] = {
    # unit tests: a handful of cases per group, 64x64, 10-20 slices
    "tiny": ScaleSpec("tiny", xray_size=64, ct_size=64, xray_fraction=0.0, ct_fraction=0.0, xray_min=3, ct_min=2,
                      min_clinical=5, slices=(1.0, 10, 20), xray_depth_samples=24),
    # `make demo` on a 2-core CPU: ~440 X-rays, ~420 CT volumes; every experiment's test part >= 10 per class
    "demo": ScaleSpec("demo", xray_size=128, ct_size=96, xray_fraction=0.025, ct_fraction=0.03, xray_min=20,
                      ct_min=12, min_clinical=140, slices=(2.6, 20, 60), xray_depth_samples=32,
                      minimums=(("xray/ccd", 70), ("ct/youan", 40), ("ct/youan:influenza", 90), ("ct/luna16", 40),
                                ("ct/icnp", 40), ("ct/mildct_centre_d", 16))),
    # Liang et al.'s Table 1 and Yao et al.'s counts at 512x512, realistic slice counts (a GPU box; streamed)
    "paper": ScaleSpec("paper", xray_size=512, ct_size=512, xray_fraction=1.0, ct_fraction=1.0, xray_min=0,
                       ct_min=0, min_clinical=0, slices=None, xray_depth_samples=64),
}
