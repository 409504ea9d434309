"""DVC stage `train_csacnet`: the 3D CSAC-Net (Yao et al. 2021) on CSDS, centre-held-out.

    python -m pipelines.train_csacnet [--val-fold 0] [--processed data/processed] [--splits data/splits/splits.parquet]
        [--ingest data/interim/ingest] [--out models/csacnet.pt] [--checkpoints build/checkpoints/csacnet]

Input: ``ct_volume`` (1 x volume_slices x volume_size x volume_size, [0, 1]); binary labels (covid19
vs the rest); train part = the training centres minus train-val fold ``--val-fold`` (the validation
subset); test = the held-out centres (``splits.centre_test``), untouched here. Cross-entropy (class
weights per ``train.class_weights``), Adam per ``train.csacnet``, the 3D augmentation
(covidscan.preprocess.augment.Augment3D). The operating threshold is chosen on the validation subset by
``evaluate.threshold_rule`` (as for the students; covidscan.evaluation.summary.operating_point) and
stored on the model card. Writes ``models/csacnet.pt`` and registers ``covidscan-csacnet``.

Data-parallel: under torchrun (or ``run.distributed.nproc_per_node`` > 1) every rank trains on its shard
(covidscan.training.distributed; BatchNorm3d: SyncBatchNorm on CUDA, per-rank statistics on the CPU);
rank 0 alone writes the model and logs to MLflow. Resumable checkpoints go under ``--checkpoints``
(``f<val-fold>/<digest of params and data>``): a rerun, or a torchrun restart after a rank died, resumes.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.train_csacnet")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val-fold", type=int, default=0)
    add_path_options(p, "processed", "splits", "ingest")
    p.add_argument("--out", type=Path, default=layout.MODELS / "csacnet.pt", help="the trained model")
    p.add_argument("--checkpoints", type=Path, default=layout.CHECKPOINTS / "csacnet", help="resumable checkpoints")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    from covidscan.evaluation.curves import auroc_exact
    from covidscan.errors import NoTrainingData
    from covidscan.models.zoo import save_model, write_empty_model
    from covidscan.tracking.registry import log_model
    from covidscan.tracking.runs import EpochLogger, data_version as manifest_version, log_loss_curve, log_metrics, log_peak_rss, stage_run
    from covidscan.training.checkpoint import checkpoint_dir
    from covidscan.training.datasets import example_batch
    from covidscan.training.tasks import load_tables, predict
    from covidscan.training.threshold import set_operating_threshold
    from covidscan.training.volume import train_volume_model, volume_dataset, volume_split

    params = load_stage_params("train_csacnet")
    from covidscan.training.distributed import is_main_process, relaunch_under_torchrun

    if (code := relaunch_under_torchrun(params.run.distributed, "pipelines.train_csacnet", argv)) is not None:
        raise SystemExit(code)
    index, splits = load_tables(args.processed, args.splits)
    try:
        train_rows, val_rows, test_rows = volume_split(index, splits, args.val_fold)
    except NoTrainingData as err:  # no CT volumes among the sources: an explicit empty output, not a failure
        if not is_main_process():
            return
        write_empty_model(args.out)
        log.warning("no CSAC-Net trained (%s); wrote an empty %s", err, args.out)
        return
    data_version = manifest_version(args.ingest / "manifest.parquet")
    with stage_run("train_csacnet", params.train.csacnet, experiment=params.run.experiment_name, tags={"data_version": data_version}):
        ckpt = checkpoint_dir(args.checkpoints / f"f{args.val_fold}", params, args.splits, args.processed / "index.parquet")
        model, result = train_volume_model("csacnet", params, train_rows, val_rows, root=args.processed, callback=EpochLogger(), checkpoint_dir=ckpt)
        if not is_main_process():  # trained its shards; rank 0 alone writes and logs
            return
        val = volume_dataset(val_rows, root=args.processed)
        val_scores = predict(model, val)[:, 1]
        val_auroc = auroc_exact(val_rows["y"].to_numpy(), val_scores)
        point = set_operating_threshold(model, val_rows["y"].to_numpy(), val_scores, params.evaluate, "csacnet")
        save_model(model, args.out, extra={"history": result.history, "n_train": len(train_rows), "n_val": len(val_rows),
                                      "threshold_rule": point.rule, "threshold_note": point.note})  # fmt: skip
        log_loss_curve({"CSAC-Net": result.history}, "figures/loss.png")
        log_metrics({"val_auroc_final": val_auroc, "n_train": len(train_rows), "n_val": len(val_rows), "n_test": len(test_rows),
                     "threshold": point.threshold})  # fmt: skip
        log_model(
            model, "csacnet", example_batch(val, 1), registered_name="covidscan-csacnet", data_version=data_version, preprocess=params.preprocess,
            checkpoint={"state_dict": model.state_dict(), "config": model.card.build},
        )  # fmt: skip
        log_peak_rss()
    log.info("CSAC-Net: train %d, validation %d (AUROC %.3f) -> %s", len(train_rows), len(val_rows), val_auroc, args.out)


if __name__ == "__main__":
    stage_main(main)
