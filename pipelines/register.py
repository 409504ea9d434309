"""DVC stage `register`: each newly trained model version -> `challenger`; the gate moves `champion`.

    python -m pipelines.register [--params build/params/register.json] [--models covidscan-student-xray ...]
        [--processed data/processed] [--splits data/splits/splits.parquet] [--ingest data/interim/ingest]
        [--reports-dir reports/evaluate] [--out metrics/register.json]

For every registered model named in ``params.registry.gates`` (registered name -> gating experiment),
the newest version becomes ``challenger`` and is compared with the current ``champion`` on the
experiment's test set (:func:`covidscan.evaluation.promotion.gate_registered`: the lower bound of the
bootstrap CI of AUROC vs the champion's AUROC minus ``registry.auroc_margin``, and at the model's stored
operating threshold sensitivity vs ``registry.min_sensitivity`` and specificity vs
``registry.min_specificity``; a model whose Control Gate Block never opened is refused; CNNRF by MSE). The decision and its figures become tags on the version, the
experiment's model card (``reports/evaluate/<exp>/model_card.html``) is attached, and ``champion`` moves
when the gate passes. A test set whose label is named by its source or centre (``evaluate.confound_purity``)
is recorded as a note on the decision, the ``covidscan.confound`` tag and the version's description. Writes ``metrics/register.json`` (the decisions). Models never registered are
skipped with a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from pipelines import add_path_options, layout, load_stage_params, stage_main

log = logging.getLogger("pipelines.register")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=Path, default=None, help="the stage's effective params (default: build/params/register.json)")
    p.add_argument("--models", nargs="*", default=None, help="registered names (default: every key of registry.gates)")
    add_path_options(p, "processed", "splits", "ingest")
    p.add_argument("--reports-dir", type=Path, default=layout.REPORTS / "evaluate", help="the evaluate stage's reports (<exp>/model_card.html)")
    p.add_argument("--out", type=Path, default=layout.METRICS / "register.json", help="the decisions (DVC metrics)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = load_stage_params("register", args.params)

    from covidscan.errors import DataError
    from covidscan.evaluation.promotion import GateData, gate_registered
    from covidscan.tracking.registry import latest_version

    for path in (args.splits, args.processed / "index.parquet", args.ingest / "manifest.parquet"):
        if not path.is_file():
            raise DataError(f"{path}: not found (run the upstream stages first)")
    clinical = args.ingest / "clinical.parquet"
    data = GateData(args.processed, pd.read_parquet(args.splits), pd.read_parquet(args.processed / "index.parquet"),
                    pd.read_parquet(args.ingest / "manifest.parquet"), pd.read_parquet(clinical) if clinical.is_file() else None)  # fmt: skip
    from covidscan.tracking.runs import log_metrics, stage_run

    report: dict[str, dict] = {}
    with stage_run("register", params.registry, experiment=params.run.experiment_name):
        for name in args.models or list(params.registry.gates):
            if latest_version(name) is None:  # e.g. no CT volumes among the sources: CSAC-Net was not trained
                why = "no registered version (its training stage had nothing to train, or it never ran)"
                log.warning("%s: %s; skipped", name, why)
                report[name] = {"skipped": True, "why": why, "promote": False}
                continue
            exp = params.registry.gates.get(name, "")
            try:
                version, decision = gate_registered(name, None, params, data, args.reports_dir / exp / "model_card.html")
            except DataError as err:  # e.g. a test set with one class: no decision, the champion stays
                log.warning("%s: no promotion decision (%s); champion unchanged", name, err)
                report[name] = {"experiment": exp, "promote": False, "reason": f"no decision: {err}"}
                continue
            report[name] = {"version": version, "experiment": exp, **decision.as_dict()}
            log_metrics({f"{name}/promoted": float(bool(decision.promote))})
            log.info("%s v%s: %s (%s)", name, version, "promoted" if decision.promote else "kept champion", decision.reason)
            for note in decision.notes:
                log.warning("%s v%s: %s", name, version, note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True, default=float).replace("NaN", "null") + "\n")


if __name__ == "__main__":
    stage_main(main)
