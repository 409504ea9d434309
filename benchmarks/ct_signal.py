"""How much of the planted CT signal simple models find in the preprocessed 2D CT stacks.

Issue 12 asks, before anything is changed for the CT half, whether the generator's signal is learnable at
the demo resolution at all. This script answers with simple models on the same ``ct_stack`` arrays the
2D framework trains on (CTMDS train-val, after ``dvc repro preprocess``), patient-grouped 5-fold
cross-validation, for three pairs: covid19 vs normal (all sources), covid19 vs normal within the youan
source only (no source shortcut: luna16 contributes normals only) and covid19 vs influenza:

* ``slab means, LR``: logistic regression on the three 10-slice slab averages at 16x16, which is what the
  paper's 1x1 grouped front (slices -> 3 channels) can see at best, linearly;
* ``histogram, LR`` / ``histogram, RF``: logistic regression / random forest on the 32-bin histogram of
  the whole stack (the fraction of voxels in the ground-glass grey range is what separates);
* ``GGO fraction per slice, RF``: a random forest on the fraction of voxels per slice whose grey value
  lies in the ground-glass range (-660 to -230 HU in the default window).

    PYTHONPATH=src python benchmarks/ct_signal.py          # after `dvc repro preprocess`

Prints one AUROC per (pair, model). Results and their reading: README "What the demo trades for time".
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from covidscan.training.tasks import PROCESSED, load_tables, task_rows

MANIFEST = "data/interim/ingest/manifest.parquet"


def features(stacks: np.ndarray) -> dict[str, np.ndarray]:
    """The simple feature sets of (n, slices, h, w) uint8 stacks."""
    n, z, h, w = stacks.shape
    third = z // 3
    slabs = stacks[:, : 3 * third].reshape(n, 3, third, h, w).mean(axis=2)
    step = max(1, h // 16)
    hist = np.stack([np.histogram(s, bins=32, range=(0, 256))[0] for s in stacks]).astype(float)
    ggo = ((stacks > 115) & (stacks < 175)).reshape(n, z, -1).mean(axis=2)
    return {"slab means": slabs[:, :, ::step, ::step].reshape(n, -1), "histogram": np.log1p(hist), "GGO fraction per slice": ggo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    index, splits = load_tables()
    rows = task_rows(index, splits, "ct").reset_index(drop=True)
    rows["source"] = pd.read_parquet(MANIFEST).set_index("record_id").loc[rows["record_id"], "source"].to_numpy()
    stacks = np.stack([np.load(PROCESSED / p) for p in rows["image_path"]])
    feats = features(stacks)
    pairs = {
        "covid19 vs normal": rows["label"].isin(["covid19", "normal"]),
        "covid19 vs normal, youan only": rows["label"].isin(["covid19", "normal"]) & (rows["source"] == "youan"),
        "covid19 vs influenza": rows["label"].isin(["covid19", "influenza"]),
    }
    models = [("slab means", "LR"), ("histogram", "LR"), ("histogram", "RF"), ("GGO fraction per slice", "RF")]
    print(f"ct_stack {stacks.shape[1:]} x {len(stacks)} records (CTMDS train-val), grouped {args.folds}-fold AUROC")
    for pair, mask in pairs.items():
        m = mask.to_numpy()
        y = (rows.loc[m, "label"] == "covid19").astype(int).to_numpy()
        cells = []
        for feat, kind in models:
            clf = LogisticRegression(C=0.1, max_iter=3000) if kind == "LR" else RandomForestClassifier(300, random_state=0, n_jobs=2)
            p = cross_val_predict(clf, feats[feat][m], y, groups=rows.loc[m, "group_id"], cv=GroupKFold(args.folds), method="predict_proba")[:, 1]
            cells.append(f"{feat}, {kind} {roc_auc_score(y, p):.2f}")
        print(f"{pair} ({int(y.sum())} vs {int(len(y) - y.sum())}): " + "; ".join(cells))


if __name__ == "__main__":
    main()
