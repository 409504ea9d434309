"""Honest real-data benchmark: patient-grouped 5-fold CV on realdata-dev, the platform against simple baselines.

Issue 14 (item 5). For each modality of ``../shared/realdata-dev`` (X-ray covid vs non_covid; CT slice
covid vs non_covid), on the same patient-grouped folds (the project's fold assignment,
:func:`covidscan.data.splits.assign._folds`: StratifiedGroupKFold over ``group_id``), this script scores

* ``student``: CNNCF at the demo profile's width, distilled (:mod:`covidscan.training.distill`) from
* ``teachers``: TS1-TS4, whose fused probabilities (mean, T=1) are also scored as an ensemble,
* ``RF 32x32``: a random forest on 32x32 grey pixels,
* ``LR 32x32``: a logistic regression on the same pixels, standardised,

every network trained by the project's loop (:func:`covidscan.training.loop.train`) on images read by the
project's reader (:func:`covidscan.data.sources.image_files.read_grey`) and preprocessed by the one 2D
path of training and serving (:func:`covidscan.preprocess.xray.preprocess_2d`: 0-255, resize,
pseudo-colour). Per outer fold k the training part (the other folds) is split once more by group: its
inner fold 0 is the validation fold on which the Control Gate Blocks open and every method's operating
threshold is chosen (``evaluate.threshold_rule``, as the distill stage does); the networks train on the
rest. Each teacher is one model per outer fold (the pipeline trains k fold models per teacher: too slow
here); the random forest and the logistic regression are fitted on the whole training part.

Reported per method: pooled out-of-fold AUROC (exact) with its bootstrap 95% CI (1000 resamples of the
images), sensitivity and specificity of the pooled calls at the per-fold thresholds chosen on the
training part, AUROC per source (where a source has both classes), and the source-shortcut probe
(:mod:`covidscan.explain.shortcut`: how well the source is predictable from the images). The networks are
also scored with horizontal-flip test-time augmentation (``+TTA`` rows, same models).

Levers (issue 14): ``--size``, ``--colormap`` (``gray3`` = grey), ``--intensity`` (per-image histogram
equalisation or CLAHE between normalisation and pseudo-colouring), ``--augment strong`` (2D flip +
rotation + scaling with the 3D recipe's parameters), ``--width`` (multiplies every CNNCF width),
``--class-weights``, ``--epochs``, ``--teachers none`` (the student alone, no distillation), and
``--sweep``: the reference setting, then one lever of :data:`SWEEP` at a time (``--levers 0,2`` picks
some), same folds; with ``--teachers none`` it measures the student alone (a fifth of the time). The
defaults are the paper's method at the demo profile's size and width. Results: docs/ACCURACY.md.

    PYTHONPATH=src python benchmarks/realdata_cv.py [../shared/realdata-dev] [--out reports/realdata_cv.json]
    PYTHONPATH=src python benchmarks/realdata_cv.py --sweep --teachers none --out reports/realdata_cv_sweep.json

One torch thread by default (``--threads``): on the shared 2-core VM two threads made a training step
4-8x slower. Without the folder the script says so and exits (status 0 for the default location, 2 for
a folder given that does not exist). The images are never copied: the preprocessed arrays live in a
temporary folder that is removed at the end. Research use only; not a medical device.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch are imported; --threads sets torch's pool

import argparse
import json
import logging
import math
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from monai.transforms import Compose, RandFlip, RandRotate, RandZoom

from covidscan.preprocess.augment import Augment2D

DEFAULT_DATA = Path("../shared/realdata-dev")
MODALITIES = {"cxr": "xray", "ct": "ct_slice2d"}  # manifest modality -> the 2D preprocessing kind
CLASSES = ("non_covid", "covid")  # output order; covid (index 1) is the positive class
POSITIVE = 1
BASELINE_SIZE = 32  # the baselines' grey thumbnails (32x32)
INTENSITY = ("none", "equalise", "clahe")
AUGMENT = ("flip", "strong")

log = logging.getLogger("benchmarks.realdata_cv")


class DataMissing(Exception):
    """The realdata-dev folder (or its manifest) is not there."""


@dataclass(frozen=True)
class Setting:
    """One configuration of the levers. The defaults are the paper's method at the demo profile's size.

    Attributes:
        size: input side (``preprocess.xray_size`` / ``ct_size``).
        colormap: ``preprocess.colormap`` (``jet``: the paper's pseudo-colour; ``gray3``: grey).
        intensity: per-image intensity normalisation before pseudo-colouring: none, equalise, clahe.
        augment: ``flip`` (the 2D framework's, Augment2D) or ``strong`` (flip + rotation + scaling).
        width: multiplier of every CNNCF width (1.0: the demo profile's).
        class_weights: ``train.class_weights``.
        teachers: teacher architectures to distil from; empty: the student alone, no distillation.
        epochs: ``train.classifier.epochs`` (None: the profile's).
    """

    size: int = 64
    colormap: str = "jet"
    intensity: str = "none"
    augment: str = "flip"
    width: float = 1.0
    class_weights: str = "inverse_frequency"
    teachers: tuple[str, ...] = ("TS1", "TS2", "TS3", "TS4")
    epochs: int | None = None

    def label(self, reference: "Setting | None" = None) -> str:
        """The fields that differ from ``reference`` (``reference`` when none)."""
        if reference is None:
            return "reference"
        diff = [f"{k}={v if not isinstance(v, tuple) else ','.join(v) or 'none'}" for k, v in asdict(self).items() if asdict(reference)[k] != v]
        return " ".join(diff) or "reference"


# --------------------------------------------------------------------------------------- data
def load_manifest(folder: Path) -> pd.DataFrame:
    """realdata-dev's manifest (path, label, patient_id, group_id, modality, source, ...).

    Raises:
        DataMissing: no folder or no manifest.csv in it.
    """
    manifest = Path(folder) / "manifest.csv"
    if not manifest.is_file():
        raise DataMissing(f"{manifest}: not found (realdata-dev is not at {folder}; pass its folder as the first argument)")
    m = pd.read_csv(manifest)
    missing = {"path", "label", "patient_id", "modality", "source"} - set(m.columns)
    if missing:
        raise DataMissing(f"{manifest}: lacks the columns {sorted(missing)}")
    if "group_id" not in m.columns:
        m["group_id"] = m["patient_id"]
    m["group_id"] = m["group_id"].fillna(m["patient_id"]).astype(str)
    unknown = sorted(set(m["label"]) - set(CLASSES))
    if unknown:
        raise DataMissing(f"{manifest}: unknown labels {unknown}; expected {list(CLASSES)}")
    return m


def read_images(rows: pd.DataFrame, folder: Path, max_pixels: int) -> list[np.ndarray]:
    """Every row's image as grey float32, read by the project's reader (nothing is copied)."""
    from covidscan.data.sources.image_files import read_grey

    return [read_grey(Path(folder) / p, max_pixels) for p in rows["path"]]


def network_inputs(images: Sequence[np.ndarray], kind: str, setting: Setting, pre: Any) -> np.ndarray:
    """uint8 (n, 3, size, size) RGB: the 2D preprocessing of training and serving
    (:func:`covidscan.preprocess.xray.preprocess_2d`), the intensity lever being ``preprocess.intensity``."""
    from covidscan.preprocess.xray import preprocess_2d

    pre = pre.model_copy(update={"intensity": setting.intensity})
    return np.stack([preprocess_2d(image, pre, kind=kind, what=f"image {i}") for i, image in enumerate(images)])


def baseline_features(images: Sequence[np.ndarray], pre: Any) -> np.ndarray:
    """32x32 grey pixels in [0, 1] (the project's 0-255 normalisation and area resize), flattened."""
    from covidscan.preprocess.xray import grey_2d

    return np.stack([grey_2d(im, pre, BASELINE_SIZE).ravel() / 255.0 for im in images]).astype(np.float32)


def assign_folds(rows: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Patient-grouped stratified folds: the split stage's own assignment (StratifiedGroupKFold over group_id)."""
    from covidscan.data.splits.assign import _folds

    return _folds(rows[["group_id", "label"]].reset_index(drop=True), n_folds, seed).to_numpy()


# ----------------------------------------------------------------------------------- settings
def setting_params(params: Any, setting: Setting) -> Any:
    """The params with a setting's levers applied (sizes, colormap, widths, class weights, epochs)."""
    c = params.models.cnncf

    def w(v: int) -> int:
        return max(1, int(round(v * setting.width)))

    cnncf = c.model_copy(update={"stem_width": w(c.stem_width), "widths_stage1": [w(v) for v in c.widths_stage1], "width_stage1_b": w(c.width_stage1_b),
                                 "widths_stage2": [w(v) for v in c.widths_stage2], "width_stage2_b": w(c.width_stage2_b)})  # fmt: skip
    classifier = params.train.classifier if setting.epochs is None else params.train.classifier.model_copy(update={"epochs": setting.epochs})
    return params.model_copy(
        update={
            "preprocess": params.preprocess.model_copy(update={"xray_size": setting.size, "ct_size": setting.size, "colormap": setting.colormap}),
            "models": params.models.model_copy(update={"cnncf": cnncf}),
            "train": params.train.model_copy(update={"classifier": classifier, "class_weights": setting.class_weights}),
            "run": params.run.model_copy(update={"num_workers": 0}),
        }
    )


class StrongAugment2D(Augment2D):
    """A stronger 2D augmentation: flip, rotation and scaling of a (C, H, W) image, with the 3D recipe's
    parameters (``aug_flip_prob``, ``aug_rotate_deg``/``aug_rotate_prob``, ``aug_scale_range``/``aug_scale_prob``)."""

    def __init__(self, cfg: Any, seed: int = 0) -> None:
        rad = math.radians(cfg.aug_rotate_deg)
        lo, hi = cfg.aug_scale_range
        self.transform = Compose([
            RandZoom(prob=cfg.aug_scale_prob, min_zoom=lo, max_zoom=hi, keep_size=True, mode="bilinear", padding_mode="edge"),
            RandFlip(prob=cfg.aug_flip_prob, spatial_axis=1),  # horizontal: W
            RandRotate(range_x=(-rad, rad), prob=cfg.aug_rotate_prob, keep_size=True, mode="bilinear", padding_mode="border"),
        ])  # fmt: skip
        self.set_seed(seed)


def make_augment(setting: Setting, pre: Any, seed: int) -> Any:
    """The training augmentation hook: Augment2D (flip, the 2D framework's), or StrongAugment2D (``strong``)."""
    from covidscan.training.tasks import seeded

    if setting.augment == "flip":
        return seeded(Augment2D(pre, seed=seed))
    if setting.augment == "strong":
        return seeded(StrongAugment2D(pre, seed=seed))
    raise ValueError(f"--augment: expected one of {AUGMENT}, got {setting.augment!r}")


# ---------------------------------------------------------------------------------- networks
def write_arrays(arrays: np.ndarray, folder: Path) -> list[str]:
    """One .npy per image (NpyDataset memory-maps them); returns the file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, a in enumerate(arrays):
        np.save(folder / f"{i}.npy", a)
        names.append(f"{i}.npy")
    return names


def build_network(name: str, params: Any, size: int) -> Any:
    """A 2D-framework network (student or teacher) for covid vs non_covid, by the project's builder."""
    from covidscan.models.zoo import build_model

    return build_model(name, params.models, input_size=size, num_classes=len(CLASSES), in_channels=3, class_labels=CLASSES, kind="image2d")


def train_network(name: str, params: Any, setting: Setting, files: list[str], root: Path, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
                  teachers: Any = None) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Train one network on rows ``tr`` (gate and history on ``va``) with the project's loop."""
    from covidscan.training.data import NpyDataset
    from covidscan.training.loop import train

    pre = params.preprocess
    train_set = NpyDataset([(files[i], int(y[i])) for i in tr], augment=make_augment(setting, pre, params.run.seed), scale=1 / 255, root=root)
    val_set = NpyDataset([(files[i], int(y[i])) for i in va], scale=1 / 255, root=root)
    model = build_network(name, params, setting.size)
    t0 = time.perf_counter()
    result = train(
        model, train_set, val_set, optim=params.train.classifier, run=params.run, class_weights=params.train.class_weights, keep=params.train.keep,
        lambda_aux=params.models.cnncf.lambda_aux, positive_index=POSITIVE, teachers=teachers, distill=params.train.distill,
    )  # fmt: skip
    model.load_state_dict(result.state_dict)
    model.eval()
    return model, {"gate_opened": result.gate_opened, "seconds": round(time.perf_counter() - t0, 1), "warnings": result.warnings}


def positive_scores(model: Any, x: Any, *, probabilities: bool = False, tta: bool = False, batch: int = 64) -> np.ndarray:
    """P(covid) per image of ``x`` (float tensor (n, 3, s, s) in [0, 1]); ``tta``: mean with the
    horizontally flipped image. ``probabilities``: the model already returns probabilities (an ensemble)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = x[start : start + batch]
            views = [xb, xb.flip(-1)] if tta else [xb]
            probs = [m if probabilities else torch.softmax(m.float(), dim=1) for m in (model(v) for v in views)]
            out.append(torch.stack(probs).mean(0)[:, POSITIVE].numpy())
    return np.concatenate(out) if out else np.zeros(0)


# -------------------------------------------------------------------------------- one modality
def cross_validate(rows: pd.DataFrame, images: Sequence[np.ndarray], setting: Setting, params: Any, *, n_folds: int, work: Path,
                   baselines: bool = True, inner_folds: int = 4) -> dict[str, Any]:  # fmt: skip
    """Out-of-fold scores of every method on one modality's rows (same folds for all).

    Args:
        rows: the modality's manifest rows (label, group_id, source, modality).
        images: their grey images, in row order.
        setting: the levers.
        params: the profile's params (levers applied here).
        n_folds: outer folds.
        work: a scratch folder for the preprocessed arrays.
        baselines: also score the random forest and the logistic regression.
        inner_folds: the training part's group folds; inner fold 0 is the validation fold.

    Returns:
        ``{"y", "fold", "methods": {name: {"score", "val": [(y_val, s_val) per fold]}}, "models": [...]}``.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from covidscan.config import DistillConfig
    from covidscan.preprocess.spec import input_spec
    from covidscan.training.distill import TeacherEnsemble, usable_teachers

    p = setting_params(params, setting)
    rows = rows.reset_index(drop=True)
    y = (rows["label"] == CLASSES[POSITIVE]).astype(int).to_numpy()
    kind = MODALITIES[str(rows["modality"].iloc[0])]
    arrays = network_inputs(images, kind, setting, p.preprocess)
    root = work / f"{rows['modality'].iloc[0]}-{abs(hash(setting)) % 10**8}"
    files = write_arrays(arrays, root)
    x_all = input_spec(kind, p.preprocess).to_tensor(arrays)
    feats = baseline_features(images, p.preprocess) if baselines else None
    fold = assign_folds(rows, n_folds, p.run.seed)

    names = ["student", "student+TTA"]
    if setting.teachers:
        names += ["teachers", "teachers+TTA"]
    if baselines:
        names += ["RF 32x32", "LR 32x32"]
    methods = {n: {"score": np.full(len(rows), np.nan), "val": []} for n in names}
    models_info: list[dict[str, Any]] = []
    for k in range(n_folds):
        test = np.flatnonzero(fold == k)
        part = np.flatnonzero(fold != k)
        if test.size == 0 or part.size == 0:
            raise DataMissing(f"outer fold {k} is empty ({len(rows)} records, {rows['group_id'].nunique()} groups, {n_folds} folds)")
        inner = assign_folds(rows.iloc[part], inner_folds, p.run.seed + 1 + k)
        tr, va = part[inner != 0], part[inner == 0]
        x_test, x_val = x_all[test], x_all[va]

        def record(name: str, s_test: np.ndarray, s_val: np.ndarray) -> None:
            methods[name]["score"][test] = s_test
            methods[name]["val"].append((y[va], s_val))

        ensemble = None
        if setting.teachers:
            trained = {}
            for t in setting.teachers:
                model, info = train_network(t, p, setting, files, root, y, tr, va)
                trained[t] = [model]
                models_info.append({"fold": k, "network": t, **info})
                log.info("  fold %d %s: %.0f s, gate %s", k, t, info["seconds"], info["gate_opened"])
            usable, _, closed = usable_teachers(trained)
            if usable:
                fused = TeacherEnsemble(usable, DistillConfig(temperature=1.0, fusion="mean"))  # the ensemble's own output: mean probability
                for tta, name in ((False, "teachers"), (True, "teachers+TTA")):
                    record(name, positive_scores(fused, x_test, probabilities=True, tta=tta), positive_scores(fused, x_val, probabilities=True, tta=tta))
                ensemble = TeacherEnsemble(usable, p.train.distill)  # the student's soft labels: T, fusion of train.distill
            else:
                log.warning("  fold %d: no teacher opened its Control Gate Block; the student trains without distillation", k)
        student, info = train_network("student", p, setting, files, root, y, tr, va, teachers=ensemble)
        models_info.append({"fold": k, "network": "student", "distilled": ensemble is not None, **info})
        log.info("  fold %d student: %.0f s, gate %s, distilled %s", k, info["seconds"], info["gate_opened"], ensemble is not None)
        for tta, name in ((False, "student"), (True, "student+TTA")):
            record(name, positive_scores(student, x_test, tta=tta), positive_scores(student, x_val, tta=tta))
        del student, ensemble

        if baselines:
            split = PredefinedSplit(inner)  # the same inner folds: OOF scores over the whole training part
            for name, est in (
                ("RF 32x32", RandomForestClassifier(n_estimators=500, random_state=p.run.seed, n_jobs=1, class_weight="balanced")),
                ("LR 32x32", make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))),
            ):
                inner_oof = cross_val_predict(est, feats[part], y[part], cv=split, method="predict_proba")[:, POSITIVE]
                est.fit(feats[part], y[part])
                methods[name]["score"][test] = est.predict_proba(feats[test])[:, POSITIVE]
                methods[name]["val"].append((y[part], inner_oof))  # threshold on the training part's inner OOF scores
    for name in list(methods):
        if np.isnan(methods[name]["score"]).any():  # a method that did not run in every fold (no usable teacher)
            log.warning("%s: not scored in every fold; left out", name)
            del methods[name]
    return {"y": y, "fold": fold, "methods": methods, "models": models_info, "arrays": arrays}


# --------------------------------------------------------------------------------- statistics
def summarise(cv: dict[str, Any], rows: pd.DataFrame, params: Any) -> dict[str, Any]:
    """Pooled OOF AUROC + bootstrap CI, sens/spec at the training-part thresholds, per-source AUROC."""
    from covidscan.evaluation.bootstrap import bootstrap_auroc
    from covidscan.evaluation.curves import auroc_exact
    from covidscan.evaluation.metrics import binary_indices
    from covidscan.evaluation.summary import operating_point

    ev = params.evaluate
    y, fold = cv["y"], cv["fold"]
    source = rows["source"].astype(str).to_numpy()
    out: dict[str, Any] = {}
    for name, m in cv["methods"].items():
        s = m["score"]
        ci = bootstrap_auroc(y, s, n_resamples=ev.bootstrap, seed=ev.bootstrap_seed, level=ev.ci_level)
        calls = np.zeros(len(y), dtype=int)
        thresholds, rules = [], []
        for k, (y_val, s_val) in enumerate(m["val"]):
            point = operating_point(ev, y_val, s_val)
            thresholds.append(point.threshold)
            rules.append(point.rule)
            calls[fold == k] = (s[fold == k] >= point.threshold).astype(int)
        idx = binary_indices(y, calls)
        per_source = {}
        for src in sorted(set(source)):
            sel = source == src
            n_pos = int(y[sel].sum())
            n_neg = int(sel.sum() - n_pos)
            auc = auroc_exact(y[sel], s[sel]) if n_pos and n_neg else float("nan")
            per_source[src] = {"auroc": auc, "n_pos": n_pos, "n_neg": n_neg, "note": "" if n_pos and n_neg else "one class only: no AUROC"}
        out[name] = {
            "auroc": ci.point, "ci": [ci.low, ci.high], "sensitivity": idx["sensitivity"], "specificity": idx["specificity"],
            "thresholds": thresholds, "threshold_rules": sorted(set(rules)), "per_source": per_source,
            "fold_auroc": [auroc_exact(y[fold == k], s[fold == k]) for k in range(int(fold.max()) + 1)],
        }  # fmt: skip
    return out


def shortcut_probe(images: Sequence[np.ndarray], arrays: np.ndarray, rows: pd.DataFrame, params: Any, seed: int) -> dict[str, Any]:
    """How well the source is predictable from the images (covidscan.explain.shortcut), and label purity by source.

    Feature sets: 16x16 pixels and the 32-bin histogram of the network inputs (after the setting's
    preprocessing, intensity lever included) and of the raw grey images.
    """
    from covidscan.explain.shortcut import confound_check, histogram_features, pixel_features, shortcut_table

    net = [a.transpose(1, 2, 0) for a in arrays]  # (H, W, 3): the probe averages RGB
    raw = [cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in images]
    raw = [(im - im.min()) / max(float(im.max() - im.min()), 1e-6) for im in raw]
    feature_sets = {
        "network input, pixels 16x16": pixel_features(net), "network input, histogram": histogram_features(net, value_range=(0, 255)),
        "raw grey, histogram": histogram_features(raw, value_range=(0.0, 1.0)),
    }  # fmt: skip
    source = rows["source"].astype(str).to_numpy()
    table = shortcut_table(feature_sets, {"source": source}, n_splits=params.evaluate.shortcut_folds, seed=seed)
    purity = confound_check(rows["label"].to_numpy(), {"source": source}, warn_at=params.evaluate.confound_purity)
    return {"probe": table, "label_purity": purity}


# ------------------------------------------------------------------------------------- output
def fmt_auc(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def markdown_tables(results: dict[str, Any]) -> str:
    """The results as markdown: one table of methods per modality, then per-source AUROC and the probe."""
    lines = []
    for mod, res in results["modalities"].items():
        lines += [f"### {mod}: {res['n']} images ({res['n_pos']} covid, {res['n_neg']} non_covid), {res['n_groups']} groups, "
                  f"{results['folds']}-fold grouped CV", ""]  # fmt: skip
        sources = sorted({s for m in res["methods"].values() for s in m["per_source"]})
        head = "| method | AUROC (95% CI) | mean fold AUROC | sensitivity | specificity | " + " | ".join(f"AUROC {s} (covid/non)" for s in sources) + " |"
        lines += [head, "|" + "---|" * (5 + len(sources))]
        for name, m in res["methods"].items():
            folds = [v for v in m["fold_auroc"] if v is not None and math.isfinite(v)]
            cells = [f"{fmt_auc(m['auroc'])} ({fmt_auc(m['ci'][0])}-{fmt_auc(m['ci'][1])})", fmt_auc(float(np.mean(folds)) if folds else float("nan")),
                     f"{m['sensitivity']:.2f}", f"{m['specificity']:.2f}"]
            for s in sources:
                ps = m["per_source"][s]
                cells.append(f"{fmt_auc(ps['auroc'])} ({ps['n_pos']}/{ps['n_neg']})" if ps["note"] == "" else f"n/a ({ps['n_pos']}/{ps['n_neg']})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Source-shortcut probe (out-of-fold AUROC of a logistic regression predicting the source):", ""]
        lines += ["| features | AUROC | sources | note |", "|---|---|---|---|"]
        for r in res["shortcut"]["probe"]:
            lines.append(f"| {r['features']} | {fmt_auc(r['auroc'])} | {r['n_groups']} | {r['note']} |")
        lp = res["shortcut"]["label_purity"]
        lines += ["", f"Label purity by source {lp['purity']:.2f} (majority class alone {lp['base_rate']:.2f}); confounded: {lp['confounded']}.", ""]
    return "\n".join(lines)


def seed_summary(values: Sequence[float]) -> str:
    """``mean (min-max)`` of a method's pooled AUROC over seeds; the single value for one seed."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "n/a"
    return f"{np.mean(v):.3f}" if len(v) == 1 else f"{np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})"


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """The lever sweep: per (modality, setting) the student's pooled AUROC (first seed, with CI), its mean
    over the seeds, +TTA, sens/spec, the random forest on the same folds (reference rows), the probe."""
    lines = ["| modality | setting | student AUROC (95% CI), first seed | student, seeds mean (min-max) | +TTA, seeds mean | sens / spec | "
             "RF 32x32, seeds mean | source probe (input pixels) | seconds |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        s, seeds = r["student"], r.get("auroc_seeds", {})
        rf = seed_summary(seeds["RF 32x32"]) if "RF 32x32" in seeds else ""
        lines.append(f"| {r['modality']} | {r['setting']} | {fmt_auc(s['auroc'])} ({fmt_auc(s['ci'][0])}-{fmt_auc(s['ci'][1])}) | "
                     f"{seed_summary(seeds.get('student', [s['auroc']]))} | {seed_summary(seeds.get('student+TTA', []))} | "
                     f"{s['sensitivity']:.2f} / {s['specificity']:.2f} | {rf} | {fmt_auc(r['probe_pixels'])} | {r['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def repeats_table(repeats: dict[str, dict[str, Any]]) -> str:
    """Pooled AUROC of every method for each seed (fold assignment and training seed), and the mean."""
    lines = []
    for mod, rep in repeats.items():
        seeds = rep["seeds"]
        lines += [f"### {mod}: pooled out-of-fold AUROC per seed", "", "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
                  "|---|" + "---|" * (len(seeds) + 1)]  # fmt: skip
        for name, values in rep["auroc"].items():
            lines.append(f"| {name} | " + " | ".join(fmt_auc(v) for v in values) + f" | {seed_summary(values).split(' ')[0]} |")
        lines.append("")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.is_available(),
            "python": platform.python_version(), "torch": torch.__version__, "date": date.today().isoformat()}  # fmt: skip


def json_clean(obj: Any) -> Any:
    """NaN -> None, numpy -> Python, for the JSON report."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------------------- main
def run_modality(mod: str, manifest: pd.DataFrame, folder: Path, setting: Setting, params: Any, *, n_folds: int, work: Path,
                 baselines: bool = True, images: Sequence[np.ndarray] | None = None) -> dict[str, Any]:  # fmt: skip
    """Cross-validate every method on one modality and summarise (the benchmark's core)."""
    rows = manifest[manifest["modality"] == mod].reset_index(drop=True)
    if rows.empty:
        raise DataMissing(f"no {mod} rows in the manifest")
    if images is None:
        images = read_images(rows, folder, params.data.dicom.max_rows * params.data.dicom.max_columns)
    t0 = time.perf_counter()
    cv = cross_validate(rows, images, setting, params, n_folds=n_folds, work=work, baselines=baselines)
    res = {
        "n": len(rows), "n_pos": int(cv["y"].sum()), "n_neg": int(len(rows) - cv["y"].sum()), "n_groups": int(rows["group_id"].nunique()),
        "setting": asdict(setting), "methods": summarise(cv, rows, params), "models": cv["models"],
        "shortcut": shortcut_probe(images, cv["arrays"], rows, params, params.run.seed), "seconds": round(time.perf_counter() - t0, 1),
        "oof": {"source": rows["source"].tolist(), "group_id": rows["group_id"].tolist(), "fold": cv["fold"].tolist(), "y": cv["y"].tolist(),
                **{n: m["score"].tolist() for n, m in cv["methods"].items()}},
    }  # fmt: skip
    return res


SWEEP: tuple[dict[str, Any], ...] = (
    {"size": 128},
    {"colormap": "gray3"},
    {"intensity": "clahe"},
    {"intensity": "equalise"},
    {"augment": "strong"},
    {"width": 2.0},
    {"class_weights": "none"},
    {"epochs": 16},
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=None, help=f"the realdata-dev folder (default {DEFAULT_DATA})")
    parser.add_argument("--out", default="reports/realdata_cv.json", help="the JSON report (not committed)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--profile", default="demo", help="the params profile whose width, epochs and batch size the networks use")
    parser.add_argument("--modality", choices=["cxr", "ct", "both"], default="both")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on the shared 2-core VM, 2 threads ran 4-8x slower per batch)")
    parser.add_argument("--size", type=int, default=Setting.size)
    parser.add_argument("--colormap", default=Setting.colormap)
    parser.add_argument("--intensity", choices=INTENSITY, default=Setting.intensity)
    parser.add_argument("--augment", choices=AUGMENT, default=Setting.augment)
    parser.add_argument("--width", type=float, default=Setting.width)
    parser.add_argument("--class-weights", choices=["inverse_frequency", "none"], default=Setting.class_weights)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--teachers", default="TS1,TS2,TS3,TS4", help="comma-separated, or 'none' (the student alone, no distillation)")
    parser.add_argument("--sweep", action="store_true", help="one lever at a time against the reference (SWEEP), student and its TTA only")
    parser.add_argument("--levers", default=None, help="with --sweep: comma-separated indices into SWEEP (default: all)")
    parser.add_argument("--seeds", default=None, help="comma-separated run seeds (each: its own folds and training seed); default: run.seed")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    folder = Path(args.data) if args.data else DEFAULT_DATA
    try:
        manifest = load_manifest(folder)
    except DataMissing as err:
        print(f"realdata_cv: {err}; nothing to benchmark.", file=sys.stderr)
        return 0 if args.data is None else 2

    import torch

    from covidscan.config import load_params

    torch.set_num_threads(args.threads)
    params = load_params(args.params, profile=args.profile)
    teachers = () if args.teachers.strip().lower() == "none" else tuple(t.strip() for t in args.teachers.split(",") if t.strip())
    base = Setting(size=args.size, colormap=args.colormap, intensity=args.intensity, augment=args.augment, width=args.width,
                   class_weights=args.class_weights, teachers=teachers, epochs=args.epochs)  # fmt: skip
    mods = ["cxr", "ct"] if args.modality == "both" else [args.modality]
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [params.run.seed]

    def seeded_runs(mod: str, setting: Setting, baselines: bool = True) -> list[dict[str, Any]]:
        out = []
        for seed in seeds:
            p = params.model_copy(update={"run": params.run.model_copy(update={"seed": seed})})
            out.append(run_modality(mod, manifest, folder, setting, p, n_folds=args.folds, work=work, baselines=baselines, images=images[mod]))
        return out

    results: dict[str, Any] = {"machine": machine(), "command": "python benchmarks/realdata_cv.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                               "folds": args.folds, "profile": args.profile, "data": str(folder)}  # fmt: skip
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="realdata_cv-") as tmp:
        work = Path(tmp)
        images = {}
        for mod in mods:
            rows = manifest[manifest["modality"] == mod].reset_index(drop=True)
            images[mod] = read_images(rows, folder, params.data.dicom.max_rows * params.data.dicom.max_columns)
        if not args.sweep:
            results["modalities"], results["repeats"] = {}, {}
            for mod in mods:
                log.info("%s: %s, seeds %s", mod, base, seeds)
                runs = seeded_runs(mod, base)
                results["modalities"][mod] = runs[0]
                results["repeats"][mod] = {"seeds": seeds, "auroc": {n: [r["methods"][n]["auroc"] for r in runs] for n in runs[0]["methods"]}}
            print(markdown_tables(results))
            if len(seeds) > 1:
                print(repeats_table(results["repeats"]))
        else:
            chosen = SWEEP if args.levers is None else tuple(SWEEP[int(i)] for i in args.levers.split(","))
            settings = [base] + [replace(base, **lever) for lever in chosen]
            results["sweep"] = []
            for mod in mods:
                for i, setting in enumerate(settings):
                    label = setting.label(base if i else None)
                    log.info("%s sweep: %s", mod, label)
                    runs = seeded_runs(mod, setting, baselines=i == 0)
                    res = runs[0]
                    probe = next(r["auroc"] for r in res["shortcut"]["probe"] if r["features"] == "network input, pixels 16x16")
                    results["sweep"].append({"modality": mod, "setting": label, **res["methods"], "probe_pixels": probe, "seeds": seeds,
                                             "auroc_seeds": {n: [r["methods"][n]["auroc"] for r in runs] for n in res["methods"]},
                                             "seconds": sum(r["seconds"] for r in runs), "detail": res})  # fmt: skip
                    print(sweep_table(results["sweep"][-1:]), flush=True)
            print(sweep_table(results["sweep"]))
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_clean(results), indent=1) + "\n")
    print(f"\n{results['seconds']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
