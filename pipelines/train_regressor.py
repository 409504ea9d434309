"""DVC stage `train_regressor`: CNNRF on the lesion crops of CADS -> the five clinical indicators.

    python -m pipelines.train_regressor [--val-fold 0] [--processed data/processed] [--splits data/splits/splits.parquet]
        [--ingest data/interim/ingest] [--out models/cnnrf.pt]

Samples are the lesion crops (``data/processed/lesion_crop``, one file of crops per record) of the
CADS train-val part; each crop's target is its record's five indicators (clinical.parquet: wbc,
neutrophil_pct, lymphocyte_pct, procalcitonin, crp), min-max normalised on the training records (the
min and max travel with the model as its card's ``target_range``, a
:class:`covidscan.models.card.TargetRange`, in ``models/cnnrf.pt`` and the registered version; a
case's prediction is the mean over its crops, de-normalised with them by evaluation and serving; the
validation records are not part of the range). Loss MSE, optimiser per
``train.regressor``. Records of ``--val-fold`` are held out for the validation loss (all records train
when that leaves nothing to train on). Registers ``covidscan-cnnrf``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.train_regressor")

SUBSET = "CADS"


def crop_items(rows: pd.DataFrame, targets: pd.DataFrame) -> list[tuple[str, int, list[float]]]:
    items = []
    for row in rows.itertuples():
        if not row.crops_path or int(row.n_crops) == 0:
            continue
        t = targets.loc[row.record_id].tolist()
        items += [(row.crops_path, i, t) for i in range(int(row.n_crops))]
    return items


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val-fold", type=int, default=0)
    add_path_options(p, "processed", "splits", "ingest")
    p.add_argument("--out", type=Path, default=layout.MODELS / "cnnrf.pt", help="the trained model")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from covidscan.errors import DataError
    from covidscan.models.card import TargetRange
    from covidscan.models.cnnrf import CLINICAL_INDICATORS
    from covidscan.models.zoo import save_model, write_empty_model
    from covidscan.tracking.registry import log_model
    from covidscan.tracking.runs import EpochLogger, data_version as manifest_version, log_loss_curve, log_metrics, log_peak_rss, stage_run
    from covidscan.training.datasets import CropDataset, example_batch
    from covidscan.training.loop import train
    from covidscan.training.tasks import build_regressor, load_tables, predict, subset_rows

    params = load_stage_params("train_regressor")
    index, splits = load_tables(args.processed, args.splits)
    clinical_path = args.ingest / "clinical.parquet"
    if not clinical_path.is_file():
        raise DataError(f"{clinical_path}: not found (run the ingest stage)")
    indicators = list(CLINICAL_INDICATORS)
    clinical = pd.read_parquet(clinical_path).set_index("record_id")[indicators].astype(float)
    rows = subset_rows(index, splits, SUBSET)
    rows = rows[(rows["n_crops"] > 0) & rows["record_id"].isin(clinical.index)]
    if rows.empty:  # e.g. public images only: no clinical indicators; an explicit empty output, not a failure
        write_empty_model(args.out)
        log.warning("no CNNRF trained (%s: no train-val records with lesion crops and clinical indicators); wrote an empty %s", SUBSET, args.out)
        return
    train_rows, val_rows = rows[rows["fold"] != args.val_fold], rows[rows["fold"] == args.val_fold]
    if train_rows.empty:
        train_rows, val_rows = rows, rows.iloc[:0]
    target_range = TargetRange(tuple(indicators), tuple(clinical.loc[train_rows["record_id"]].min()), tuple(clinical.loc[train_rows["record_id"]].max()))
    normalised = pd.DataFrame(target_range.normalise(clinical.to_numpy(float)), index=clinical.index, columns=indicators)
    train_set = CropDataset(crop_items(train_rows, normalised), root=args.processed)
    val_set = CropDataset(crop_items(val_rows, normalised), root=args.processed) if not val_rows.empty else None
    data_version = manifest_version(args.ingest / "manifest.parquet")
    with stage_run("train_regressor", params.train.regressor, experiment=params.run.experiment_name, tags={"data_version": data_version}):
        model = build_regressor(params.models, params.preprocess, target_range=target_range)
        logger = EpochLogger()
        result = train(model, train_set, val_set, optim=params.train.regressor, run=params.run, task="regression", keep=params.train.keep if val_set is not None else "last", callback=logger)
        model.load_state_dict(result.state_dict)
        extra = {"indicators": indicators, "n_train_records": len(train_rows), "history": result.history}
        save_model(model, args.out, extra=extra)
        log_loss_curve({"CNNRF": result.history}, "figures/loss.png")
        if val_set is not None:
            pred = predict(model, val_set)
            target = np.array(val_set.targets)
            log_metrics({"val_mse_normalised": float(np.mean((pred - target) ** 2))})
        log_metrics({"n_train_crops": len(train_set), "n_val_crops": len(val_set) if val_set is not None else 0})
        log_model(
            model, "cnnrf", example_batch(train_set, 1), registered_name="covidscan-cnnrf", data_version=data_version, preprocess=params.preprocess,
            checkpoint={"state_dict": model.state_dict(), "config": model.card.build},  # the config carries the target range
        )  # fmt: skip
        log_peak_rss()
    log.info("CNNRF: %d training crops from %d records -> %s", len(train_set), len(train_rows), args.out)


if __name__ == "__main__":
    stage_main(main)
