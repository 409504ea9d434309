"""DVC stage `preprocess`: ingest's manifest + arrays -> preprocessed .npy files, index, figures.

    python -m pipelines.preprocess [--params build/params/preprocess.json] [--ingest data/interim/ingest]
        [--out data/processed] [--cache-dir build/cache/preprocess] [--figures-dir reports/figures/preprocess]

Reads ``data/interim/ingest/`` (manifest.parquet, annotations.parquet, the arrays), writes
``data/processed/`` (index.parquet, crops.parquet, input_specs.json, the arrays; see
covidscan.preprocess.cache) and ``reports/figures/preprocess/`` (Fig. 1a, Fig. 1b, PCA per modality).
The content-hash cache lives in ``build/cache/preprocess/``, outside the DVC outs, so it survives
``dvc repro -f``. Params read: ``preprocess``, ``run.seed`` (PCA sampling) and ``run.num_workers`` (processes).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from covidscan.config import PreprocessConfig
from covidscan.errors import DataError
from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.preprocess")


def write_figures(index: pd.DataFrame, processed_dir: Path, figures_dir: Path, cfg: PreprocessConfig, seed: int) -> list[Path]:
    """Fig. 1a (pseudo-colour examples), Fig. 1b (dimension normalisation) and the PCA figures."""
    from covidscan.explain.pca import grey_image, pca_figures
    from covidscan.visualize import plot_dimension_normalisation, plot_pseudo_colour_examples

    written: list[Path] = []

    def example(mask: pd.Series) -> dict | None:
        """The paper shows abnormal examples: the first covid19 record, else the first record."""
        rows = index[mask].sort_values("record_id")
        covid = rows[rows["label"] == "covid19"]
        return (covid if len(covid) else rows).iloc[0].to_dict() if len(rows) else None

    xr = example(index["input_kind"] == "xray")
    ct_any = example(index["modality"] == "ct")
    examples = {}
    if xr is not None:
        examples["X-ray"] = np.load(processed_dir / xr["grey_path"])
    if ct_any is not None:  # the middle slice of a stack, or a 2D CT slice's grey image
        examples["CT slice"] = grey_image(ct_any, processed_dir, cfg.ct_size).round().astype(np.uint8)
    if examples:
        written.append(plot_pseudo_colour_examples(examples, figures_dir / "fig1a_pseudo_colour.png"))
    ct = example(index["input_kind"] == "ct_stack")
    if ct is not None:
        written.append(plot_dimension_normalisation(np.load(processed_dir / ct["image_path"]), figures_dir / "fig1b_dimension_normalisation.png"))
    written += pca_figures(index, processed_dir, figures_dir, seed=seed)
    return written


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=Path, default=None, help="the stage's effective params (default: build/params/preprocess.json)")
    add_path_options(p, "ingest")
    p.add_argument("--out", type=Path, default=layout.PROCESSED, help="the preprocessed folder (the DVC output)")
    p.add_argument("--cache-dir", type=Path, default=layout.CACHE / "preprocess", help="the content-hash cache (outside the DVC outs)")
    p.add_argument("--figures-dir", type=Path, default=layout.REPORTS / "figures" / "preprocess")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--workers", type=int, default=None, help="processes (default: run.num_workers, at least 1)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from covidscan.preprocess.cache import preprocess_manifest

    params = load_stage_params("preprocess", args.params)
    manifest_path = args.ingest / "manifest.parquet"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: not found (run the ingest stage first)")
    manifest = pd.read_parquet(manifest_path)
    workers = max(1, args.workers if args.workers is not None else params.run.num_workers)
    from covidscan.tracking.runs import log_artifact, log_metrics, stage_run

    with stage_run("preprocess", params.preprocess, experiment=params.run.experiment_name):
        index = preprocess_manifest(manifest, args.ingest, params.preprocess, args.out, cache_dir=args.cache_dir, workers=workers)
        counts = index["input_kind"].value_counts().to_dict()
        log.info("index: %d records (%s); cache hits %d, misses %d", len(index), counts, index.attrs["hits"], index.attrs["misses"])
        if not args.no_figures:
            for path in write_figures(index, args.out, args.figures_dir, params.preprocess, params.run.seed):
                log.info("figure: %s", path)
                log_artifact(path, "figures")
        log_artifact(args.out / "input_specs.json", "preprocess")
        log_metrics({"cache_hits": index.attrs["hits"], "cache_misses": index.attrs["misses"], "n_records": len(index)})


if __name__ == "__main__":
    stage_main(main)
