"""Every figure the project draws, apart from the statistics it draws (as MONAI keeps ``visualize/``
apart from ``metrics/``).

- evaluation: ROC and precision-recall curves with the readers as points (PR with iso-F1 lines),
  the reliability diagram, the ROC with its bootstrap band and the bootstrap boxplots (the numbers come
  from :mod:`covidscan.evaluation.curves` and :mod:`covidscan.evaluation.bootstrap`);
- interpretability: the PCA eigen-image grid (Liang et al. 2020, Fig. 2a; :mod:`covidscan.explain.pca`);
- preprocessing: pseudo-colouring and CT dimension normalisation (Liang et al. 2020, Fig. 1).

Every ``plot_*`` function writes one PNG and returns its path; the ``*_figure`` functions return the
figure instead (tests read its colours). A reader keeps one colour in every figure
(:func:`reader_colours`); the model is C0.

The backend is not chosen here: the entry points (``pipelines.stage_main``, the ``covidscan`` CLI)
select Agg once, and the tests set ``MPLBACKEND=Agg``. The evaluation figures use pyplot; the PCA and
preprocessing ones draw on a ``matplotlib.figure.Figure`` (no global pyplot state).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from covidscan.errors import DataError
from covidscan.evaluation.curves import ISO_F1_LEVELS, Curve, Reliability, auprc, auroc, iso_f1_curve, pr_points, roc_points
from covidscan.preprocess.ct import stack_groups
from covidscan.preprocess.xray import GRAY3, pseudo_colour

if TYPE_CHECKING:
    from covidscan.evaluation.bootstrap import BootstrapResult, RocBand
    from covidscan.explain.pca import EigenImages


# ------------------------------------------------------------------ ROC, PR, reliability (evaluation)
ReaderPoints = Mapping[str, Mapping[str, float]]
"""Reader name -> its indices (needs "sensitivity", "specificity", "precision")."""

MODEL_COLOURS: tuple[str, ...] = ("C0", "black", "C7")
"""The model curves' colours, in the order the curves are given (C0 for a single model)."""
READER_COLOURS: tuple[str, ...] = ("C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")
"""The readers' palette: never a model colour, never the grey of the chance and iso-F1 lines."""


def reader_colours(names: Iterable[str]) -> dict[str, str]:
    """One colour per reader, the same in every figure (ROC, ROC with CI, PR) whatever the order the
    readers come in: the sorted names take :data:`READER_COLOURS` in turn (repeating past eight)."""
    return {name: READER_COLOURS[i % len(READER_COLOURS)] for i, name in enumerate(sorted(set(names)))}


def draw_readers(ax: plt.Axes, readers: ReaderPoints | None, x: str, y: str) -> None:
    """The readers as points (``x``/``y``: index names; ``"1-specificity"`` for the ROC's x), each in
    its :func:`reader_colours` colour."""
    readers = readers or {}
    colours = reader_colours(readers)
    for name, idx in readers.items():
        xv = 1 - idx["specificity"] if x == "1-specificity" else idx[x]
        ax.plot(xv, idx[y], "o", ms=6, color=colours[name], label=name)


def _save(fig: plt.Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def roc_figure(curves: Mapping[str, Curve], readers: ReaderPoints | None = None, title: str = "ROC") -> plt.Figure:
    """The figure :func:`plot_roc` writes (curves in :data:`MODEL_COLOURS`, readers in :func:`reader_colours`)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, (label, curve) in enumerate(curves.items()):
        fpr, tpr = roc_points(curve)
        ax.plot(fpr, tpr, lw=1.8, color=MODEL_COLOURS[i % len(MODEL_COLOURS)], label=f"{label} (AUROC {auroc(curve):.4f})")
    finish_roc_axes(ax, readers, title)
    return fig


def finish_roc_axes(ax, readers: ReaderPoints | None, title: str) -> None:
    """The readers' points, the chance diagonal, limits, labels, title and legend of a ROC plot."""
    draw_readers(ax, readers, "1-specificity", "sensitivity")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 - specificity", ylabel="Sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)


def plot_roc(
    curves: Mapping[str, Curve],
    path: Path | str,
    readers: ReaderPoints | None = None,
    title: str = "ROC",
) -> Path:
    """ROC curve(s) with the readers as points; legend shows the grid AUROC.

    Args:
        curves: label -> grid curve (e.g. {"CNNCF": curve}).
        path: PNG to write.
        readers: reader name -> indices with "sensitivity" and "specificity".
        title: plot title.

    Returns:
        The written path.
    """
    return _save(roc_figure(curves, readers, title), path)


def pr_figure(
    curves: Mapping[str, Curve], readers: ReaderPoints | None = None, title: str = "Precision-recall", iso_f1: Sequence[float] = ISO_F1_LEVELS
) -> plt.Figure:
    """The figure :func:`plot_pr` writes (curves in :data:`MODEL_COLOURS`, readers in :func:`reader_colours`)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for level in iso_f1:
        r, p = iso_f1_curve(level)
        keep = p <= 1.0
        ax.plot(r[keep], p[keep], color="grey", ls="--", lw=0.8, alpha=0.7)
        ax.annotate(
            f"F1={level:.1f}",
            xy=(0.9, 0.9 * level / (1.8 - level) + 0.02),
            color="grey",
            fontsize=7,
        )
    for i, (label, curve) in enumerate(curves.items()):
        recall, precision, _ = pr_points(curve)
        ax.plot(recall, precision, lw=1.8, color=MODEL_COLOURS[i % len(MODEL_COLOURS)], label=f"{label} (AUPRC {auprc(curve):.4f})")
    draw_readers(ax, readers, "sensitivity", "precision")
    ax.set(
        xlim=(-0.01, 1.01), ylim=(-0.01, 1.05), xlabel="Recall (sensitivity)", ylabel="Precision"
    )
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_pr(
    curves: Mapping[str, Curve],
    path: Path | str,
    readers: ReaderPoints | None = None,
    title: str = "Precision-recall",
    iso_f1: Sequence[float] = ISO_F1_LEVELS,
) -> Path:
    """PR curve(s) with the readers as points and grey dashed iso-F1 lines (Liang et al. 2020, Fig. 4).

    Args:
        curves: label -> grid curve.
        path: PNG to write.
        readers: reader name -> indices with "sensitivity" and "precision".
        title: plot title.
        iso_f1: F1 levels drawn as grey dashed curves.

    Returns:
        The written path.
    """
    return _save(pr_figure(curves, readers, title, iso_f1), path)


def plot_reliability(rel: Reliability, path: Path | str, title: str = "Reliability") -> Path:
    """Reliability diagram (observed frequency vs mean score per bin) with the ECE in the title.

    Args:
        rel: result of :func:`~covidscan.evaluation.curves.reliability`.
        path: PNG to write.
        title: plot title prefix.

    Returns:
        The written path.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    centres = (rel.edges[:-1] + rel.edges[1:]) / 2
    width = np.diff(rel.edges)
    ok = rel.counts > 0
    ax.bar(
        centres[ok], rel.frequency[ok], width=width[ok], edgecolor="k", alpha=0.6, label="observed"
    )
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfect calibration")
    ax.plot(rel.confidence[ok], rel.frequency[ok], "o-", color="C1", ms=4, label="bin mean score")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Predicted probability", ylabel="Observed frequency")
    ax.set_title(f"{title} (ECE {rel.ece:.4f})")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------- bootstrap
def roc_band_figure(
    band: RocBand, readers: Mapping[str, Mapping[str, float]] | None = None, label: str = "model", title: str = "ROC with 95% CI"
) -> plt.Figure:
    """The figure :func:`plot_roc_band` writes (the model in ``MODEL_COLOURS[0]``, readers in
    :func:`reader_colours`, as on the ROC and PR figures)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    pct = int(round(band.auc.level * 100))
    colour = MODEL_COLOURS[0]
    ax.fill_between(band.fpr, band.low, band.high, color=colour, alpha=0.25, label=f"{pct}% CI")
    ax.plot(
        band.fpr,
        band.tpr,
        color=colour,
        lw=1.8,
        label=f"{label} (AUC {band.auc.point:.3f}, {band.auc.low:.3f}-{band.auc.high:.3f})",
    )
    finish_roc_axes(ax, readers, title)
    return fig


def plot_roc_band(
    band: RocBand,
    path: Path | str,
    readers: Mapping[str, Mapping[str, float]] | None = None,
    label: str = "model",
    title: str = "ROC with 95% CI",
) -> Path:
    """Plot a ROC with its shaded bootstrap band (and readers as points).

    Args:
        band: result of :func:`~covidscan.evaluation.bootstrap.roc_with_ci`.
        path: PNG to write.
        readers: reader name -> indices with "sensitivity" and "specificity".
        label: legend label of the model.
        title: plot title.

    Returns:
        The written path.
    """
    return _save(roc_band_figure(band, readers, label, title), path)


def plot_boxplots(
    distributions: Mapping[str, Mapping[str, BootstrapResult]],
    path: Path | str,
    indices: Sequence[str] = ("f1", "kappa", "specificity", "sensitivity", "precision"),
    title: str = "",
) -> Path:
    """Boxplots of every index's bootstrap distribution, raters side by side (Liang et al. 2020, Fig. 5).

    Args:
        distributions: rater name (model first, then readers) -> index name -> result.
        path: PNG to write.
        indices: the indices to draw, one panel each.
        title: figure title.

    Returns:
        The written path.
    """
    raters = list(distributions)
    fig, axes = plt.subplots(1, len(indices), figsize=(3.2 * len(indices), 3.8), squeeze=False)
    for ax, index in zip(axes[0], indices, strict=True):
        data = []
        for rater in raters:
            s = distributions[rater][index].samples
            data.append(s[np.isfinite(s)])
        ax.boxplot(data, showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(raters) + 1), raters, rotation=45, ha="right", fontsize=8)
        ax.set_title(index)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------- PCA (Fig. 2a)
def plot_eigen_images(results: dict[str, EigenImages], path: str | Path, title: str = "", n_components: int = 5, cmap: str = "jet") -> Path:
    """Save the Fig. 2a-style grid: rows = classes, columns = mean + eigen-images, with colour bars.

    The mean image is shown on its 0-255 scale with a grey colour bar; the eigen-images of a row share a
    symmetric scale (their values are signed loadings) with one colour bar at the row's end.

    Args:
        results: label -> EigenImages (row order = dict order).
        path: PNG to write.
        title: figure title.
        n_components: columns of eigen-images (missing ones are left blank).
        cmap: colormap of the eigen-images.
    """
    from matplotlib.figure import Figure

    if not results:
        raise DataError(f"{path}: nothing to plot (no class had at least two images)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_rows, n_cols = len(results), 1 + n_components
    fig = Figure(figsize=(1.9 * n_cols + 1.2, 1.9 * n_rows + 0.7), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, (label, res) in enumerate(results.items()):
        im0 = axes[r, 0].imshow(res.mean, cmap="gray", vmin=0, vmax=255)
        axes[r, 0].set_ylabel(f"{label}\n(n={res.n_images})", fontsize=9)
        fig.colorbar(im0, ax=axes[r, 0], fraction=0.046, pad=0.02)
        lim = float(np.abs(res.components).max()) or 1.0
        im = None
        for c in range(n_components):
            ax = axes[r, 1 + c]
            if c < len(res.components):
                im = ax.imshow(res.components[c], cmap=cmap, vmin=-lim, vmax=lim)
                if r == 0:
                    ax.set_title(f"eigen-image {c + 1}", fontsize=9)
                ax.set_xlabel(f"{100 * res.explained_variance_ratio[c]:.1f}% var.", fontsize=8)
        if im is not None:
            fig.colorbar(im, ax=list(axes[r, 1:]), fraction=0.02, pad=0.01)
        if r == 0:
            axes[r, 0].set_title("mean image", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


# ----------------------------------------------------------------- preprocessing (Fig. 1)
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


def plot_regression_scatter(truth: np.ndarray, predicted: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """CNNRF's predicted vs reference indicators (both min-max normalised with the training range), one
    colour per indicator, with the identity line."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for j, name in enumerate(names):
        ax.scatter(truth[:, j], predicted[:, j], s=12, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("reference (min-max normalised with the training range)")
    ax.set_ylabel("prediction")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ training
def loss_curve_figure(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> plt.Figure:
    """Train (and, where recorded, validation) loss per epoch: one line pair per named history (the
    training loop's ``history``: ``epoch`` 0-based, ``train_loss``, optional ``val_loss``)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, history in histories.items():
        epochs = [h["epoch"] + 1 for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label=f"{name} train")
        if history and "val_loss" in history[0]:
            ax.plot(epochs, [h.get("val_loss", np.nan) for h in history], marker="s", linestyle="--", label=f"{name} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
