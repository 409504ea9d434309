"""An experiment's test set and a saved model's outputs on it (the evaluate stage's model-running glue).

:func:`test_records` selects the test records of an experiment (``part == "test"`` in the experiment's
subsets, label in positive + negative) and joins the preprocessing index and the manifest facts the
evaluation needs (source, centre, RT-PCR, stored size). :func:`run_model` feeds the preprocessed arrays
to a model (through :meth:`covidscan.preprocess.spec.InputSpec.to_tensor`, exactly as training does) and
returns class probabilities, penultimate features and per-case inference time. :func:`class_scores`
turns probabilities into the experiment's binary score.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covidscan.config import ExperimentSpec, PreprocessConfig
from covidscan.errors import DataError, NoTestRecords

log = logging.getLogger(__name__)

MANIFEST_FACTS = ("source", "centre", "rtpcr_initial", "rows", "cols", "n_slices", "spacing_slice", "severity")

# model card input kind -> (index input_kind values it accepts, index column with the array path); an
# X-ray model (image2d) takes X-rays only, a CT-slice model (ct_slice2d) CT slices only
_INPUTS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "image2d": (("xray",), "image_path", ""),
    "ct_slice2d": (("ct_slice2d",), "image_path", ""),
    "ct_stack": (("ct_stack",), "image_path", "ct_stack"),
    "ct_volume": (("ct_stack",), "volume_path", "ct_volume"),
    "lesion_crop": (("xray", "ct_slice2d", "ct_stack"), "crops_path", "lesion_crop"),
}


def test_records(
    spec: ExperimentSpec, splits: pd.DataFrame, index: pd.DataFrame, manifest: pd.DataFrame
) -> pd.DataFrame:
    """The experiment's test records, one row each, with index and manifest columns.

    Args:
        spec: the experiment (subsets, positive and negative classes).
        splits: ``data/splits/splits.parquet``.
        index: ``data/processed/index.parquet``.
        manifest: ``data/interim/ingest/manifest.parquet``.

    Returns:
        Rows sorted by record_id with ``y`` (1 = a positive class) and the index/manifest columns.

    Raises:
        NoTestRecords: no test record matches.
    """
    classes = [*spec.positive, *spec.negative]
    sel = splits[(splits["part"] == "test") & splits["subset"].isin(spec.subsets) & splits["label"].isin(classes)]
    ids = sorted(set(sel["record_id"]))
    facts = [c for c in MANIFEST_FACTS if c in manifest.columns and c not in index.columns]
    rows = index[index["record_id"].isin(ids)].merge(manifest[["record_id", *facts]], on="record_id", how="left")
    if rows.empty:
        raise NoTestRecords(f"no test record in subsets {spec.subsets} with labels {classes} (check the splits table and the preprocessed index)")
    rows = rows.sort_values("record_id").reset_index(drop=True)
    rows["y"] = rows["label"].isin(spec.positive).astype(int)
    return rows


def usable_records(rows: pd.DataFrame, model_kind: str) -> pd.DataFrame:
    """The records whose preprocessed input this model can take (e.g. volumes for a 3D network).

    Raises:
        DataError: an unknown input kind.
        NoTestRecords: no usable record.
    """
    if model_kind not in _INPUTS:
        raise DataError(f"model input kind {model_kind!r} unknown; expected one of {sorted(_INPUTS)}")
    kinds, column, _ = _INPUTS[model_kind]
    ok = rows["input_kind"].isin(kinds) & (rows[column].fillna("") != "")
    dropped = int((~ok).sum())
    if dropped:
        left = ", ".join(f"{k}: {v}" for k, v in rows.loc[~ok, "input_kind"].value_counts().sort_index().items())
        log.warning("%d test record(s) have no %s input for this model and are left out (%s)", dropped, model_kind, left)
    out = rows[ok].reset_index(drop=True)
    if out.empty:
        raise NoTestRecords(f"no test record has a {model_kind} input ({column}) for this model")
    return out


def spec_kind(model_kind: str, input_kind: str) -> str:
    """The :mod:`covidscan.preprocess.spec` kind of a record's array for a model input kind."""
    return _INPUTS[model_kind][2] or input_kind


def load_input(row: pd.Series | dict, model_kind: str, processed_dir: Path, cfg: PreprocessConfig):
    """One record's model input as a float tensor: (1, C, ...) or, for lesion crops, (n_crops, C, ...)."""
    from covidscan.preprocess.spec import input_spec

    _, column, _ = _INPUTS[model_kind]
    spec = input_spec(spec_kind(model_kind, row["input_kind"]), cfg)
    arr = np.load(Path(processed_dir) / row[column])
    t = spec.to_tensor(arr)
    return t if t.ndim == len(spec.shape) + 1 else t.unsqueeze(0)


@dataclass
class ModelOutputs:
    """A model's outputs on a test set.

    Attributes:
        outputs: (n, C) class probabilities (softmax) for a classifier; (n, k) predictions for a regressor
            (the mean over a case's crops).
        features: (n, d) penultimate features (the last linear layer's input, averaged over crops).
        seconds: (n,) wall time of each case's forward pass.
    """

    outputs: np.ndarray
    features: np.ndarray
    seconds: np.ndarray


def _last_linear(model):
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1] if linears else None


def run_model(model, rows: pd.DataFrame, processed_dir: Path, cfg: PreprocessConfig) -> ModelOutputs:
    """Run a model (eval mode, no gradients) on every row, one case at a time.

    Args:
        model: a model from :func:`covidscan.models.zoo.load_model`.
        rows: records from :func:`usable_records`.
        processed_dir: ``data/processed``.
        cfg: the preprocessing parameters (input specs).
    """
    import torch

    kind = model.card.input_spec.kind
    regression = model.card.task == "regression"
    captured: list[torch.Tensor] = []
    last = _last_linear(model)
    hook = last.register_forward_hook(lambda _m, inp, _o: captured.append(inp[0].detach())) if last is not None else None
    device = next(model.parameters()).device
    outs, feats, secs = [], [], []
    model.eval()
    try:
        with torch.no_grad():
            for _, row in rows.iterrows():
                x = load_input(row, kind, processed_dir, cfg).to(device)
                captured.clear()
                start = time.perf_counter()
                y = model(x)
                secs.append(time.perf_counter() - start)
                y = y.float() if regression else torch.softmax(y.float(), dim=1)
                outs.append(y.mean(0).cpu().numpy())
                feats.append(captured[-1].float().mean(0).cpu().numpy() if captured else np.zeros(1, np.float32))
    finally:
        if hook is not None:
            hook.remove()
    return ModelOutputs(np.stack(outs), np.stack(feats), np.asarray(secs, dtype=float))


GENERIC_PREFIX = "class_"  # labels of a model built without class names: class_0, class_1, ...
COMPLEMENT_PREFIX = "non-"  # a binary model's "everything but <class>" output, e.g. non-covid19


def class_scores(probs: np.ndarray, class_labels: Sequence[str], positive: Sequence[str], negative: Sequence[str]) -> np.ndarray:
    """The experiment's binary score: the model's P(positive classes), on the model's own scale.

    Not renormalised over the experiment's classes: the operating threshold on the model card was chosen
    on validation data on this same probability (covid19 vs every other class of the task), so it applies
    unchanged to every experiment. (Renormalising over, say, covid19 + normal inflates the score of a
    normal case that the model finds a little pneumonia-like, and the stored threshold then calls every
    normal case positive: specificity 0.00 at AUROC 1.00, as the demo showed.)

    Every class of the experiment must be an output of the model; there is no fallback. Two binary
    models are read explicitly:

    * labels exactly ``[class_0, class_1]`` (a model built without class names): P(class_1);
    * labels ``[non-<p>, <p>]`` (in either order) for an experiment with the single positive class
      ``<p>`` (e.g. CSAC-Net's ``non-covid19`` / ``covid19``): P(<p>), the complement covering every
      negative class.

    Raises:
        DataError: the model lacks one of the experiment's classes (the message names the experiment's
            classes and the model's outputs).
    """
    p = np.asarray(probs, dtype=float)
    labels = list(class_labels)
    if p.ndim != 2 or p.shape[1] != len(labels):
        raise DataError(f"model outputs of shape {p.shape} do not match its {len(labels)} class labels {labels}")
    if labels == [f"{GENERIC_PREFIX}0", f"{GENERIC_PREFIX}1"]:
        return p[:, 1]
    if len(positive) == 1 and sorted(labels) == sorted([positive[0], f"{COMPLEMENT_PREFIX}{positive[0]}"]):
        return p[:, labels.index(positive[0])]
    missing = [c for c in [*positive, *negative] if c not in labels]
    if missing:
        raise DataError(
            f"the experiment's classes {[*positive, *negative]} (positive {list(positive)}, negative {list(negative)}) are not all "
            f"outputs of the model {labels}: it lacks {missing}; score it only on an experiment whose classes it was trained on"
        )
    return np.clip(p[:, [labels.index(c) for c in positive]].sum(1), 0.0, 1.0)


def class_probs(probs: np.ndarray, class_labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Probabilities of ``classes`` (in that order), renormalised to sum to one (experiment R).

    Raises:
        DataError: a class is not an output of the model.
    """
    labels = list(class_labels)
    missing = [c for c in classes if c not in labels]
    if missing:
        raise DataError(f"the model's outputs {labels} lack the classes {missing}")
    p = np.asarray(probs, dtype=float)[:, [labels.index(c) for c in classes]]
    s = p.sum(1, keepdims=True)
    return np.where(s > 0, p / np.where(s > 0, s, 1.0), 1.0 / len(classes))
