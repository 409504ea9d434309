"""Run the suites with Great Expectations 1.x and build the data docs.

An *ephemeral* context (nothing written but the data docs): every suite is one ``ExpectationSuite``
on one pandas ``dataframe`` asset, one ``ValidationDefinition`` and one ``Checkpoint``; after all
checkpoints ran, ``build_data_docs`` renders this run's validation results (and the suites) into a
filesystem data-docs site in ``docs_dir`` (``index.html``). One build for all suites is several
times faster than an ``UpdateDataDocsAction`` per checkpoint, which re-renders the index each time.

Importing Great Expectations takes seconds; callers that validate many times (tests) create one
context with :func:`make_context` and pass it to :func:`validate`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from covidscan.config import SplitsConfig, ValidationConfig
from covidscan.environment import quiet_telemetry
from covidscan.errors import ValidationFailed
from covidscan.validation.report import SuiteOutcome, ValidationReport, failure_from_result
from covidscan.validation.tables import (
    IngestTables,
    annotation_table,
    clinical_table,
    columns_table,
    image_table,
    manifest_table,
    read_ingest,
    reads_table,
    split_tables,
)

log = logging.getLogger(__name__)
_RUNS = itertools.count()


def make_context() -> Any:
    """An ephemeral Great Expectations context with telemetry and progress bars off."""
    quiet_telemetry()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _docs_site(context: Any, docs_dir: Path) -> str:
    name = "covidscan-" + hashlib.sha1(str(docs_dir.resolve()).encode()).hexdigest()[:10]
    sites = context.get_config().data_docs_sites or {}
    if name not in sites:
        context.add_data_docs_site(
            site_name=name,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return name


def run_checks(checks: Sequence[Any], context: Any, docs_dir: Path | None, max_examples: int) -> ValidationReport:
    """Run each :class:`~covidscan.validation.suites.Check` through a checkpoint; collect a report."""
    import great_expectations as gx

    start = time.perf_counter()
    site = _docs_site(context, docs_dir) if docs_dir is not None else None
    datasource = context.data_sources.add_or_update_pandas(name=f"covidscan-run{next(_RUNS)}")
    outcomes: list[SuiteOutcome] = []
    failures = []
    identifiers: list[Any] = []
    for check in checks:
        batch = datasource.add_dataframe_asset(name=check.name).add_batch_definition_whole_dataframe("whole")
        expectations = [copy.copy(e) for e in check.expectations]  # an Expectation belongs to one suite
        # a reused context (tests) holds the previous run's objects: drop them (cheaper than add_or_update)
        for factory in (context.checkpoints, context.validation_definitions, context.suites):
            try:
                factory.delete(name=check.name)
            except Exception:  # noqa: BLE001 - GE raises various DataContextError subclasses for "not found"
                pass
        suite = context.suites.add(gx.ExpectationSuite(name=check.name, expectations=expectations))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=check.name, data=batch, suite=suite))
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        index = [c for c in check.index_columns if c in check.frame.columns]
        if index:
            result_format["unexpected_index_column_names"] = index
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=check.name,
                validation_definitions=[definition],
                actions=[],  # data docs are built once for all suites below (an action per checkpoint re-renders the index each time)
                result_format=result_format,
            )
        )
        frame = check.frame.reset_index(drop=True)
        t0 = time.perf_counter()
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        log.debug("checkpoint %s ran in %.2f s", check.name, time.perf_counter() - t0)
        n_eval = n_fail = 0
        identifiers.extend(result.run_results.keys())
        for suite_result in result.run_results.values():
            for r in suite_result.results:
                n_eval += 1
                if not r.success:
                    n_fail += 1
                    failures.append(failure_from_result(check.name, r, max_examples))
        outcomes.append(SuiteOutcome(name=check.name, success=bool(result.success), evaluated=n_eval, failed=n_fail, rows=len(frame)))
        log.info("suite %s: %d/%d expectations passed on %d rows", check.name, n_eval - n_fail, n_eval, len(frame))
    docs_index = None
    if site is not None and docs_dir is not None:
        t0 = time.perf_counter()
        context.build_data_docs(site_names=[site], resource_identifiers=identifiers)
        log.info("data docs built in %.2f s: %s", time.perf_counter() - t0, docs_dir / "index.html")
        docs_index = (docs_dir / "index.html").resolve()
    return ValidationReport(outcomes, failures, docs_index, time.perf_counter() - start)


def build_checks(
    tables: IngestTables,
    cfg: ValidationConfig,
    splits: pd.DataFrame | None = None,
    splits_cfg: SplitsConfig | None = None,
    subset_names: Sequence[str] | None = None,
) -> list[Any]:
    """The suites for what there is: manifest always; images, clinical, annotations, reads, splits
    when present."""
    from covidscan.validation import suites

    manifest = manifest_table(tables, cfg.patient_id_regex, cfg.study_id_regex)
    checks = [
        suites.manifest_columns_check(tables.manifest, cfg, columns_table(tables.manifest)),
        suites.manifest_check(manifest, cfg),
    ]
    images = image_table(tables, cfg.ct_hu_quantile, cfg.ct_padding_hu)
    if not images.empty:
        for kind, frame in images.groupby("kind", sort=True):
            if kind in ("xray", "ct_volume", "ct_slice2d"):
                checks.append(suites.image_check(str(kind), frame, cfg))
    clinical = clinical_table(tables)
    if clinical is not None:
        checks.append(suites.clinical_check(clinical, cfg))
    annotations = annotation_table(tables, cfg.box_reference_size)
    if annotations is not None:
        checks.append(suites.annotations_check(annotations, cfg))
    reads = reads_table(tables)
    if reads is not None:
        checks.append(suites.reads_check(reads))
    if splits is not None and {"record_id", "patient_id"} <= set(tables.manifest.columns):
        splits_cfg = splits_cfg or SplitsConfig()
        names = None
        if subset_names is not None:
            names = list(subset_names) + [m for m in splits_cfg.mixed if m not in subset_names]
        t = split_tables(splits, tables.manifest, splits_cfg.mixed, cfg.patient_id_regex)
        checks += suites.split_checks(t, splits_cfg.n_folds, names)
    return checks


def validate(
    ingest: str | Path | IngestTables,
    cfg: ValidationConfig,
    *,
    splits: pd.DataFrame | None = None,
    splits_cfg: SplitsConfig | None = None,
    subset_names: Sequence[str] | None = None,
    docs_dir: str | Path | None = None,
    context: Any = None,
    raise_on_failure: bool = True,
) -> ValidationReport:
    """Run every data-quality suite; build the data docs; fail loudly with a readable summary.

    Args:
        ingest: the ingest folder (``manifest.parquet`` + arrays + side tables) or its tables.
        cfg: ``params.validate``.
        splits: the split table (``data/splits/splits.parquet``); None skips the split suites.
        splits_cfg: ``params.splits`` (fold count, mixed sets) for the split suites.
        subset_names: the declared sub-datasets (``params.subsets``); when given, the split table may
            name only these and the mixed sets.
        docs_dir: where to build the Great Expectations data docs (``index.html``); None for none.
        context: a context from :func:`make_context` to reuse (importing GE is slow).
        raise_on_failure: raise :class:`ValidationFailed` when anything fails.

    Returns:
        The :class:`ValidationReport` (also when it failed and ``raise_on_failure`` is False).

    Raises:
        ValidationFailed: with :meth:`ValidationReport.summary` as the message.
        DataError: the ingest folder has no manifest.
    """
    tables = ingest if isinstance(ingest, IngestTables) else read_ingest(ingest)
    start = time.perf_counter()
    checks = build_checks(tables, cfg, splits, splits_cfg, subset_names)
    context = context if context is not None else make_context()
    docs = Path(docs_dir) if docs_dir is not None else None
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
    report = run_checks(checks, context, docs, cfg.max_examples)
    report.seconds = time.perf_counter() - start
    if not report.success:
        log.error("data validation failed: %d expectation(s) in %s", len(report.failures), sorted({f.suite for f in report.failures}))
        if raise_on_failure:
            err = ValidationFailed(report.summary())
            err.report = report  # type: ignore[attr-defined]
            raise err
    return report
