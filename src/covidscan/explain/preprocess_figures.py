"""Figures that show the preprocessing (seed 000, Fig. 1): pseudo-colouring and CT dimension normalisation.

Both draw on a matplotlib ``Figure`` (Agg, no global pyplot state) and save a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from covidscan.errors import DataError
from covidscan.preprocess.ct import stack_groups
from covidscan.preprocess.xray import GRAY3, pseudo_colour


def _listed_cmap(name: str):
    """A matplotlib colormap with exactly the colours the OpenCV map gives 0..255 (for colour bars)."""
    from matplotlib.colors import ListedColormap

    rgb = pseudo_colour(np.arange(256, dtype=np.uint8)[None, :], name)[:, 0, :].T / 255.0  # (256, 3)
    return ListedColormap(rgb, name=name)


def plot_pseudo_colour_examples(images: Mapping[str, np.ndarray], path: str | Path, colormaps: Sequence[str] = ("jet", "turbo", "bone", "hot")) -> Path:
    """Fig. 1a: each grey image next to its pseudo-coloured versions, with 0-255 colour bars.

    Args:
        images: row label -> uint8 grey image (H, W), e.g. {"X-ray": grey_xray, "CT slice": grey_ct}.
        path: PNG to write.
        colormaps: OpenCV colormap names, one column each (after the grey column).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if not images:
        raise DataError("plot_pseudo_colour_examples: no images given")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [GRAY3, *colormaps]
    fig = Figure(figsize=(2.6 * len(names), 2.5 * len(images) + 0.5), layout="constrained")
    axes = fig.subplots(len(images), len(names), squeeze=False)
    for r, (label, grey) in enumerate(images.items()):
        if grey.dtype != np.uint8 or grey.ndim != 2:
            raise DataError(f"plot_pseudo_colour_examples: {label!r} must be uint8 (H, W), got {grey.dtype} {grey.shape}")
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.imshow(pseudo_colour(grey, name).transpose(1, 2, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("grey" if name == GRAY3 else name, fontsize=10)
            if c == 0:
                ax.set_ylabel(label, fontsize=10)
            cmap = _listed_cmap(name)
            fig.colorbar(ScalarMappable(Normalize(0, 255), cmap), ax=ax, fraction=0.046, pad=0.02, ticks=[0, 128, 255])
    fig.suptitle("Pseudo-colouring: 8-bit grey image -> OpenCV colormap (3 channels)")
    fig.savefig(path, dpi=100)
    return path


def plot_dimension_normalisation(stack: np.ndarray, path: str | Path, samples_per_group: int = 3, groups: int = 3) -> Path:
    """Fig. 1b: a dimension-normalised CT stack split into three groups of contiguous slices -> 3 channels.

    Each row is one group: a few of its slices, then the group's mean, which is what the network's
    1x1 groups=3 convolution computes with uniform weights (the trained layer learns its own weights).
    The last column shows the three channels together as an RGB image.

    Args:
        stack: uint8 (S, H, W), S a multiple of ``groups`` (the ``ct_stack`` array).
        path: PNG to write.
        samples_per_group: slices shown per group (first, ..., last of the group).
        groups: number of groups (3 for RGB).
    """
    from matplotlib.figure import Figure

    if stack.ndim != 3:
        raise DataError(f"plot_dimension_normalisation: expected (S, H, W), got {stack.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = stack_groups(np.asarray(stack), groups)
    n = parts[0].shape[0]
    means = [p.astype(np.float32).mean(axis=0) for p in parts]
    n_cols = samples_per_group + 2
    fig = Figure(figsize=(2.2 * n_cols, 2.3 * groups + 0.6), layout="constrained")
    axes = fig.subplots(groups, n_cols, squeeze=False)
    channel_names = ("R", "G", "B") if groups == 3 else tuple(str(i) for i in range(groups))
    picks = np.unique(np.linspace(0, n - 1, samples_per_group).round().astype(int))
    for g in range(groups):
        for c, k in enumerate(picks):
            axes[g, c].imshow(parts[g][k], cmap="gray", vmin=0, vmax=255)
            axes[g, c].set_title(f"slice {g * n + k}", fontsize=9)
        axes[g, 0].set_ylabel(f"group {g + 1}\nslices {g * n}-{(g + 1) * n - 1}", fontsize=9)
        axes[g, samples_per_group].imshow(means[g], cmap="gray", vmin=0, vmax=255)
        axes[g, samples_per_group].set_title(f"channel {channel_names[g]}", fontsize=9)
    if groups == 3:
        rgb = np.stack(means, axis=-1) / 255.0
        axes[groups // 2, -1].imshow(np.clip(rgb, 0, 1))
        axes[groups // 2, -1].set_title("3-channel input", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    fig.suptitle(f"Dimension normalisation: {stack.shape[0]} slices -> {groups} groups of {n} -> {groups} channels (1x1 conv, groups={groups})", fontsize=10)
    fig.savefig(path, dpi=100)
    return path
