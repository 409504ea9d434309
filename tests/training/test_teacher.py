"""The teachers' cross-validation tables: marker files, reading the out-of-fold tables, the CV aggregate
(fold AUROCs against scikit-learn, the pooled AUROC, a fold without a positive)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from covidscan.training.teacher import TeacherCV, aggregate_cv, fold_paths, oof_columns, read_oof, write_marker


def _fold_table(task: str, teacher: str, fold: int, y: list[int], p_covid: list[float]) -> pd.DataFrame:
    n = len(y)
    table = pd.DataFrame({"record_id": [f"{task}-{fold}-{i}" for i in range(n)], "task": task, "teacher": teacher, "fold": fold,
                          "label": ["covid19" if v == 2 else "normal" for v in y], "y": y})  # fmt: skip
    rest = (1.0 - np.asarray(p_covid)) / (len(oof_columns(task)) - 7)  # shared by the other classes (7: 6 columns + covid19)
    for column in oof_columns(task)[6:]:
        table[column] = np.asarray(p_covid) if column == "p_covid19" else rest
    return table[oof_columns(task)]


def test_markers_are_skipped_and_tables_concatenated(tmp_path):
    write_marker(tmp_path, "xray", "TS1", 4, "fold not configured")
    model_path, oof_path = fold_paths(tmp_path, "xray", "TS1", 4)
    assert model_path.stat().st_size == 0 and pd.read_parquet(oof_path).empty
    assert list(pd.read_parquet(oof_path).columns) == oof_columns("xray")
    assert read_oof(tmp_path).empty
    for fold in (0, 1):
        _fold_table("xray", "TS1", fold, [2, 0, 1], [0.9, 0.2, 0.4]).to_parquet(fold_paths(tmp_path, "xray", "TS1", fold)[1], index=False)
    oof = read_oof(tmp_path)
    assert len(oof) == 6 and sorted(oof["fold"].unique()) == [0, 1]


def test_aggregate_cv_fold_and_pooled_aurocs():
    rng = np.random.default_rng(0)
    folds = []
    for fold in range(3):
        y = [2, 2, 0, 1, 0, 1, 2, 0]
        folds.append(_fold_table("ct", "TS2", fold, y, rng.random(len(y)).round(3).tolist()))
    folds.append(_fold_table("ct", "TS2", 3, [0, 1, 0], [0.1, 0.5, 0.3]))  # no covid19 in fold 3: AUROC undefined
    oof = pd.concat(folds, ignore_index=True)
    (cv,) = aggregate_cv(oof)["ct"].values()
    expected = [round(roc_auc_score(f["y"] == 2, f["p_covid19"]), 6) for f in folds[:3]]
    assert isinstance(cv, TeacherCV) and cv.folds == (0, 1, 2, 3) and cv.n == len(oof)
    assert list(cv.fold_auroc[:3]) == pytest.approx(expected, abs=1e-6) and cv.fold_auroc[3] is None
    assert cv.mean_auroc == pytest.approx(sum(expected) / 3, abs=1e-6)
    assert cv.oof_auroc == pytest.approx(roc_auc_score(oof["y"] == 2, oof["p_covid19"]), abs=1e-6)
    assert cv.as_dict()["fold_auroc"] == list(cv.fold_auroc) and cv.weights() == {"folds": [0, 1, 2, 3], "fold_auroc": list(cv.fold_auroc)}
    assert aggregate_cv(pd.DataFrame(columns=["task", "teacher", "fold", "y", "p_covid19"])) == {}
