"""An anatomical chest phantom built from simple solids, sampled as CT slices or projected as an X-ray.

Coordinates are millimetres in the DICOM patient frame (LPS): +x = patient left, +y = posterior,
+z = superior. z = 0 is near the lung bases; the lungs span about [0, lung_height].

The phantom is a list of solids painted in order (later solids override earlier ones), so the same
object gives a CT slice (sample a plane) and an X-ray (sample a block and integrate along y). Lesions
(see :mod:`covidscan.data.synth.lesions`) are painted last and only where the tissue is lung.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_HU = 40.0
BONE_HU = 650.0


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned ellipsoid (or elliptic cylinder when the z radius is infinite) of one tissue.

    Args:
        centre: (x, y, z) mm.
        radii: (rx, ry, rz) mm; rz may be ``math.inf``.
        hu: value painted inside.
        lung: whether the painted voxels count as lung (lesions may grow there).
        z_range: optional (z_min, z_max) clip, for cylinders.
        disc_period: optional (period, disc_thickness, disc_hu): periodic discs along z (the spine).
        only_lung: paint only where the tissue so far is lung (organs that carve the lungs).
    """

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    hu: float
    lung: bool = False
    z_range: tuple[float, float] | None = None
    disc_period: tuple[float, float, float] | None = None
    only_lung: bool = False

    def bounds(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        cx, cy, cz = self.centre
        rx, ry, rz = self.radii
        zlo, zhi = cz - rz, cz + rz
        if self.z_range is not None:
            zlo, zhi = max(zlo, self.z_range[0]), min(zhi, self.z_range[1])
        return (cx - rx, cx + rx), (cy - ry, cy + ry), (zlo, zhi)

    def mask(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        cx, cy, cz = self.centre
        rx, ry, rz = self.radii
        q = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        if math.isfinite(rz):
            q = q + ((z - cz) / rz) ** 2
        m = q <= 1.0
        if self.z_range is not None:
            m = m & (z >= self.z_range[0]) & (z <= self.z_range[1])
        return m

    def values(self, z: np.ndarray) -> np.ndarray | float:
        if self.disc_period is None:
            return self.hu
        period, disc, disc_hu = self.disc_period
        return np.where(np.mod(z, period) < disc, disc_hu, self.hu)


@dataclass(frozen=True)
class Ribs:
    """Rib pairs: thin bands hugging the inside of the body outline, sloping down anteriorly.

    Args:
        body_radii: (ax, ay) of the body ellipse, mm.
        levels: z (mm) of each rib at y = 0.
        slope: dz/dy (posterior ribs sit higher).
        half_height: half the rib height along z, mm.
        ring: (inner, outer) radius of the band as a fraction of the body ellipse.
        anterior_cut: ribs stop at y < anterior_cut (costal cartilage not drawn).
        hu: bone value.
    """

    body_radii: tuple[float, float]
    levels: tuple[float, ...]
    slope: float
    half_height: float
    ring: tuple[float, float]
    anterior_cut: float
    hu: float = BONE_HU
    lung: bool = False
    only_lung: bool = False

    def bounds(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        ax, ay = self.body_radii
        dz = abs(self.slope) * ay + self.half_height
        return (-ax, ax), (self.anterior_cut, ay), (min(self.levels) - dz, max(self.levels) + dz)

    def mask(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        ax, ay = self.body_radii
        r = np.sqrt((x / ax) ** 2 + (y / ay) ** 2)
        ring = (r >= self.ring[0]) & (r <= self.ring[1]) & (y >= self.anterior_cut)
        zz = z - self.slope * y
        near = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), dtype=bool)
        for level in self.levels:
            near |= np.abs(zz - level) <= self.half_height
        return ring & near

    def values(self, z: np.ndarray) -> float:
        return self.hu


@dataclass(frozen=True)
class Blob:
    """A soft-edged lesion: blends towards ``hu`` inside lung tissue only.

    The weight is a logistic function of the normalised ellipsoid radius, 0.5 on the surface; ``edge``
    is its width (0.05 = sharp consolidation, 0.25 = hazy ground glass).
    """

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    hu: float
    edge: float

    def bounds(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        s = 1.0 + 5.0 * self.edge
        return tuple((c - s * r, c + s * r) for c, r in zip(self.centre, self.radii))  # type: ignore[return-value]

    def weight(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        cx, cy, cz = self.centre
        rx, ry, rz = self.radii
        r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2)
        return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) / self.edge, -30, 30)))


Solid = Ellipsoid | Ribs


@dataclass
class Phantom:
    """One patient's chest: anatomy solids, lesion blobs and a few shape facts."""

    solids: list[Solid]
    lesions: list[Blob] = field(default_factory=list)
    lung_height: float = 250.0
    body_radii: tuple[float, float] = (155.0, 105.0)
    lungs: tuple[Ellipsoid, Ellipsoid] | None = None
    excluders: tuple[Ellipsoid, ...] = ()
    lung_hu: float = -850.0

    # ----------------------------------------------------------------------------- sampling
    def render(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """HU on the separable grid (z, y, x) given by the three sorted 1D axes (mm)."""
        hu = np.full((len(zs), len(ys), len(xs)), AIR_HU, dtype=np.float32)
        lung = np.zeros(hu.shape, dtype=bool)
        for solid in self.solids:
            box = _box(solid.bounds(), xs, ys, zs)
            if box is None:
                continue
            sz, sy, sx = box
            X, Y, Z = xs[sx][None, None, :], ys[sy][None, :, None], zs[sz][:, None, None]
            m = np.broadcast_to(solid.mask(X, Y, Z), (Z.shape[0], Y.shape[1], X.shape[2]))
            if solid.only_lung:
                m = m & lung[sz, sy, sx]
            if not m.any():
                continue
            vals = np.broadcast_to(np.asarray(solid.values(Z), dtype=np.float32), m.shape)
            hu[sz, sy, sx][m] = vals[m]
            lung[sz, sy, sx][m] = solid.lung
        for blob in self.lesions:
            box = _box(blob.bounds(), xs, ys, zs)
            if box is None:
                continue
            sz, sy, sx = box
            X, Y, Z = xs[sx][None, None, :], ys[sy][None, :, None], zs[sz][:, None, None]
            w = blob.weight(X, Y, Z).astype(np.float32) * lung[sz, sy, sx]
            view = hu[sz, sy, sx]
            view += w * (np.float32(blob.hu) - view)
        return hu

    def in_lung(self, points: np.ndarray) -> np.ndarray:
        """Whether each (x, y, z) point (N, 3) lies in lung tissue (anatomy only, no lesions)."""
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        inside = np.zeros(len(points), dtype=bool)
        for lung in self.lungs or ():
            inside |= lung.mask(x, y, z)
        for ex in self.excluders:
            inside &= ~ex.mask(x, y, z)
        return inside

    def lung_volume_ml(self) -> float:
        """Approximate volume of both lungs (analytic ellipsoids, ignoring exclusions), ml."""
        return sum(4.0 / 3.0 * math.pi * float(np.prod(l.radii)) for l in self.lungs or ()) / 1000.0


def _box(bounds, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Index slices of the grid that cover a solid's bounding box, or None when it misses the grid."""
    out = []
    for (lo, hi), axis in zip((bounds[2], bounds[1], bounds[0]), (zs, ys, xs)):
        i0 = int(np.searchsorted(axis, lo, side="left"))
        i1 = int(np.searchsorted(axis, hi, side="right"))
        if i1 <= i0:
            return None
        out.append(slice(i0, i1))
    return out[0], out[1], out[2]


# --------------------------------------------------------------------------------- anatomy
def make_phantom(rng: np.random.Generator) -> Phantom:
    """Draw one patient's anatomy (sizes and positions vary a little between patients).

    Args:
        rng: the patient's random stream.
    """
    ax = float(rng.uniform(140.0, 170.0))  # body half-width
    ay = float(rng.uniform(95.0, 118.0))  # body half-depth
    height = float(rng.uniform(230.0, 275.0))  # lung height
    dx = float(rng.normal(0.0, 4.0))  # patient off-centre
    lung_hu = float(rng.uniform(-875.0, -830.0))
    neck_z = height + 25.0

    solids: list[Solid] = [
        # body: subcutaneous fat shell then soft tissue, chest then neck
        Ellipsoid((dx, 0.0, 0.0), (ax, ay, math.inf), FAT_HU, z_range=(-1e4, neck_z)),
        Ellipsoid((dx, 0.0, 0.0), (0.92 * ax, 0.9 * ay, math.inf), SOFT_HU, z_range=(-1e4, neck_z)),
        Ellipsoid((dx, 10.0, 0.0), (0.38 * ax, 0.55 * ay, math.inf), SOFT_HU, z_range=(neck_z, 1e4)),
    ]
    lungs = []
    for side in (-1.0, 1.0):
        lung = Ellipsoid(
            (dx + side * 0.5 * ax, 0.06 * ay, 0.42 * height),
            (0.37 * ax * float(rng.uniform(0.95, 1.05)), 0.74 * ay, 0.6 * height),
            lung_hu,
            lung=True,
        )
        lungs.append(lung)
    solids += lungs
    excluders = [
        # organs that carve the lungs: diaphragm domes (liver on the patient's right = -x, higher),
        # heart, upper mediastinum, descending aorta
        Ellipsoid((dx - 0.5 * ax, 0.1 * ay, -0.3 * height), (0.75 * ax, 1.1 * ay, 0.38 * height), SOFT_HU, only_lung=True),
        Ellipsoid((dx + 0.5 * ax, 0.1 * ay, -0.33 * height), (0.7 * ax, 1.1 * ay, 0.36 * height), SOFT_HU, only_lung=True),
        Ellipsoid((dx + 0.15 * ax, -0.3 * ay, 0.26 * height), (0.42 * ax, 0.55 * ay, 0.27 * height), SOFT_HU, only_lung=True),
        Ellipsoid((dx, -0.05 * ay, 0.75 * height), (0.18 * ax, 0.35 * ay, 0.4 * height), SOFT_HU, only_lung=True),
        Ellipsoid((dx + 0.12 * ax, 0.42 * ay, 0.4 * height), (0.08 * ax, 0.11 * ay, math.inf), SOFT_HU,
                  z_range=(-0.2 * height, 0.75 * height), only_lung=True),
    ]
    solids += excluders
    # vessels: small soft-tissue dots in the lungs, denser towards the hila (they stay "lung")
    n_vessels = int(rng.integers(24, 40))
    for _ in range(n_vessels):
        lung = lungs[int(rng.integers(0, 2))]
        (cx, cy, cz), (rx, ry, rz) = lung.centre, lung.radii
        r = float(rng.uniform(0.05, 0.85)) ** 1.5
        ang = float(rng.uniform(0, 2 * math.pi))
        px = cx + r * rx * math.cos(ang) - np.sign(cx - dx) * 0.25 * rx * (1 - r)
        py = cy + r * ry * math.sin(ang)
        pz = cz + float(rng.uniform(-0.6, 0.7)) * rz
        rad = float(rng.uniform(1.5, 3.5)) * (1.4 - r)
        solids.append(Ellipsoid((px, py, pz), (rad, rad, rad * 1.6), float(rng.uniform(-80.0, 30.0)), lung=True))
    # airway, bones
    solids += [
        Ellipsoid((dx, -0.1 * ay, 0.0), (9.0, 9.0, math.inf), AIR_HU + 10.0, z_range=(0.68 * height, 1e4)),
        Ellipsoid((dx, 0.72 * ay, 0.0), (0.12 * ax, 0.17 * ay, math.inf), 380.0, disc_period=(28.0, 5.0, 80.0)),
        Ellipsoid((dx, 0.93 * ay, 0.0), (0.03 * ax, 0.09 * ay, math.inf), 380.0, disc_period=(28.0, 5.0, 80.0)),
        Ellipsoid((dx, -0.86 * ay, 0.5 * height), (0.1 * ax, 0.05 * ay, 0.35 * height), 450.0),
    ]
    levels = tuple(float(v) for v in np.arange(-0.05, 1.02, 0.095) * height + float(rng.uniform(-6, 6)))
    solids.append(
        Ribs(
            body_radii=(0.9 * ax, 0.88 * ay),
            levels=levels,
            slope=0.35,
            half_height=5.0,
            ring=(0.9, 1.0),
            anterior_cut=-0.55 * ay,
        )
    )
    return Phantom(
        solids=solids,
        lung_height=height,
        body_radii=(ax, ay),
        lungs=(lungs[0], lungs[1]),
        excluders=tuple(excluders),
        lung_hu=lung_hu,
    )


# ------------------------------------------------------------------------------ projection
def project_xray(phantom: Phantom, xs: np.ndarray, zs: np.ndarray, depth_samples: int) -> np.ndarray:
    """Posterior-anterior projection: water-equivalent path length (mm) per pixel, rows = z descending.

    Args:
        phantom: the patient.
        xs: column positions (mm), ascending (patient right to left as seen on a PA film).
        zs: row positions (mm), any order (rows come out in the given order).
        depth_samples: samples along y through the body (the integration step is body depth / samples).
    """
    ay = phantom.body_radii[1]
    ys = np.linspace(-1.05 * ay, 1.05 * ay, depth_samples).astype(np.float64)
    dy = float(ys[1] - ys[0])
    order = np.argsort(zs)
    zs_sorted = np.asarray(zs)[order]
    out = np.empty((len(zs), len(xs)), dtype=np.float32)
    chunk = max(1, int(4_000_000 // (len(xs) * depth_samples)))
    for start in range(0, len(zs_sorted), chunk):
        zc = zs_sorted[start : start + chunk]
        hu = phantom.render(xs, ys, zc)
        mu = np.clip(1.0 + hu / 1000.0, 0.0, None)
        out[order[start : start + chunk]] = mu.sum(axis=1) * dy
    return out
