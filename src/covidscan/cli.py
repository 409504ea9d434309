"""The `covidscan` command line (typer).

Every command has --help; user errors (covidscan.errors.CovidscanError) print as one red line without a
traceback and exit non-zero. Long work shows rich progress. Commands are thin: parse arguments, load
the typed config where needed, call the library.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console

from covidscan import RESEARCH_NOTICE, __version__
from covidscan.errors import CovidscanError

# The project's data layout (dvc.yaml's outs), as the CLI's defaults: the entry point names them, the
# library modules take paths as arguments.
SYNTH_DIR = Path("data/raw/synthetic")
INGEST_DIR = Path("data/interim/ingest")
PROCESSED_DIR = Path("data/processed")
SPLITS_FILE = Path("data/splits/splits.parquet")
ANNOTATIONS_DIR = Path("data/raw/annotations")  # the annotation platform's export (params: data.annotations)

app = typer.Typer(
    name="covidscan",
    help=f"covidscan: COVID-19 detection on chest X-ray and CT, as a reproducible MLOps pipeline. {RESEARCH_NOTICE}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# soft_wrap: a result line (often naming a long path) stays one line for scripts and logs, whatever the width
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
ProfileOption = Annotated[str | None, typer.Option("--profile", help="Profile to apply (overrides the file's `profile`).")]


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a CovidscanError into one clear line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CovidscanError as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=err.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`@app.command` plus user-error handling."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        return app.command(*args, **kwargs)(user_errors(func))

    return decorate


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """covidscan command line."""
    import matplotlib

    from covidscan.environment import quiet_telemetry

    quiet_telemetry()
    matplotlib.use("Agg")  # the backend is chosen here, once, for every command (figures are PNG files)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@command()
def version() -> None:
    """Print the covidscan version."""
    out.print(f"covidscan {__version__}")


@command("check-params")
def check_params(params: ParamsOption = Path("params.yaml"), profile: ProfileOption = None) -> None:
    """Validate params.yaml (and its profiles) and print the active profile."""
    from covidscan.config import load_params

    p = load_params(params, profile=profile)
    out.print(f"{params}: OK (profile '{p.profile}')")


@command("inspect")
def inspect_command(
    paths: Annotated[list[Path], typer.Argument(help="DICOM file(s) or CT series folder(s).", show_default=False)],
    params: Annotated[
        Path, typer.Option("--params", help="params.yaml for data.dicom limits (defaults when the file is absent).")
    ] = Path("params.yaml"),
    profile: ProfileOption = None,
) -> None:
    """Read DICOM files or CT series folders strictly and describe them (no identifying fields).

    A file: modality, size, spacing, transfer syntax, value range after the LUTs. A folder (or
    multi-frame CT): the assembled series: slice count, spacing, z range, HU range, orientation.
    """
    from covidscan.config import DicomLimits, load_params
    from covidscan.data.dicom import inspect_path

    limits = load_params(params, profile=profile).data.dicom if params.exists() else DicomLimits()
    for path in paths:
        out.print(inspect_path(path, limits).render(), highlight=False, soft_wrap=True)

salt_app = typer.Typer(help="The de-identification salt (kept outside the repository and MLflow).", no_args_is_help=True)
app.add_typer(salt_app, name="salt")


@salt_app.command("init")
@user_errors
def salt_init(
    params: ParamsOption = Path("params.yaml"),
    profile: ProfileOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing salt file (every pseudonym changes).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when a salt is already there.")] = False,
) -> None:
    """Create the salt file (data.deid.salt_file, mode 0600) unless a salt is already set; idempotent."""
    import os

    from covidscan.config import DeidConfig, load_params
    from covidscan.data.deid import init_salt, load_salt, salt_path

    cfg = load_params(params, profile=profile).data.deid if params.is_file() else DeidConfig()
    if not force and os.environ.get(cfg.salt_env):
        load_salt(cfg)  # validates it (length)
        if not quiet:
            out.print(f"salt set by the environment variable {cfg.salt_env}; nothing to do")
        return
    if not force and salt_path(cfg).is_file():
        load_salt(cfg)  # validates location, permissions and length
        if not quiet:
            out.print(f"salt file {salt_path(cfg)} already exists; nothing to do (--force replaces it)")
        return
    path = init_salt(cfg, force=force)
    out.print(f"salt written to {path} (mode 0600); keep it outside the repository and MLflow, and back it up")

@command()
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset root to write (empty, absent, or a previous synthetic dataset).")] = SYNTH_DIR,
    scale: Annotated[str | None, typer.Option("--scale", help="tiny | demo | paper (default: synth.scale of --params).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (default: synth.seed of --params).")] = None,
    params: Annotated[Path, typer.Option("--params", help="params.yaml to read synth settings from, if it exists.")] = Path("params.yaml"),
    profile: ProfileOption = None,
) -> None:
    """Write the synthetic hybrid DICOM dataset (hospital-export layout) with known ground truth."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from covidscan.config import SynthConfig, load_params
    from covidscan.data.synth import generate
    from covidscan.errors import ConfigError

    cfg = load_params(params, profile=profile).synth if params.is_file() else SynthConfig(scale="demo")
    overrides = {k: v for k, v in {"scale": scale, "seed": seed}.items() if v is not None}
    try:
        cfg = SynthConfig.model_validate({**cfg.model_dump(), **overrides})
    except ValueError as err:
        raise ConfigError(f"synth options: {err}") from None
    with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("cases", total=None)
        summary = generate(cfg, out_dir, on_case=lambda done, total: bar.update(task, completed=done, total=total))
    out.print(
        f"{summary.out}: {summary.n_xray} X-rays, {summary.n_ct} CT volumes, {summary.n_files} DICOM files "
        f"(scale {cfg.scale}, seed {cfg.seed})"
    )

@command("models")
def models(
    params: Annotated[Path | None, typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present, else built-in defaults).")] = None,
    profile: ProfileOption = None,
) -> None:
    """List every network as the pipeline builds it: task, input kind and shape, classes, parameters, forward GFLOPs (batch 1), output."""
    from rich.table import Table

    from covidscan.config import Params, load_params
    from covidscan.models.zoo import summary_row
    from covidscan.training.tasks import pipeline_networks

    if params is None and not Path("params.yaml").is_file():
        p = Params() if profile in (None, "paper") else load_params(Path("params.yaml"), profile=profile)
        source = "built-in defaults"
    else:
        p = load_params(params or Path("params.yaml"), profile=profile)
        source = f"{params or 'params.yaml'} (profile '{p.profile}')"
    rows = [summary_row(net.label, net.build) for net in pipeline_networks(p.models, p.preprocess)]
    table = Table(title=f"covidscan networks: {source}")
    columns = (("model", "left"), ("input kind", "left"), ("input", "left"), ("classes / outputs", "left"), ("parameters", "right"),
               ("GFLOPs", "right"), ("output", "left"))  # fmt: skip
    for col, justify in columns:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        if r["error"]:
            table.add_row(r["name"], "-", "-", "-", "-", "-", f"[red]refused: {r['error']}[/]")
        else:
            shape = "x".join(str(n) for n in r["input_shape"])
            table.add_row(r["name"], r["input_kind"], shape, ", ".join(r["classes"]), f"{r['params']:,}", f"{r['gflops']:.3f}",
                          str(tuple(r["output_shape"])))  # fmt: skip
    Console().print(table)  # a console made now, so it takes the terminal width (COLUMNS) of this call, not of the import


@command("plots")
def plots(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for index.html (dvc's default).")] = Path("dvc_plots"),
    vendor: Annotated[Path, typer.Option("--vendor", help="Folder of the pinned vega libraries (git-ignored).")] = Path("vendor/vega"),
    show: Annotated[bool, typer.Option("--show/--no-show", help="Run `dvc plots show` (--no-show: only fetch the libraries and write the template).")] = True,
) -> None:
    """`dvc plots show` as a self-contained page: the pinned vega libraries inlined, no CDN (works offline)."""
    from covidscan.evaluation import plots_page

    template = plots_page.prepare(vendor)
    if not show:
        out.print(f"{template}: the offline template for `dvc plots show --html-template`")
        return
    page = plots_page.show(out_dir, template)
    out.print(f"{page} (self-contained: vega, vega-lite and vega-embed inlined; opens without network)")


@command("evaluate-external")
def evaluate_external_command(
    model: Annotated[str, typer.Option("--model", help="Registered model: <name>@<alias> or <name>/<version> (MLflow registry).")],
    source: Annotated[str, typer.Option("--source", help="<adapter>:<location>, e.g. hospital:/data/export.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the report.")] = Path("reports/external"),
    params: Annotated[Path | None, typer.Option("--params", help="params.yaml (default: ./params.yaml if present).")] = None,
    profile: ProfileOption = None,
    positive: Annotated[list[str], typer.Option("--positive", help="Positive class(es).")] = ["covid19"],  # noqa: B006
) -> None:
    """Validate a registered model on an external source: ingest, preprocess, indices with CIs, report.

    The source is preprocessed as the registered version was (its ``covidscan.preprocess`` tag), not
    with the current params.yaml's ``preprocess`` section.
    """
    import tempfile

    from covidscan.config import Params, load_params
    from covidscan.errors import ConfigError
    from covidscan.evaluation.external import evaluate_external, parse_source
    from covidscan.evaluation.report import flatten_metrics
    from covidscan.models.zoo import load_model
    from covidscan.tracking.registry import export_checkpoint, recorded_preprocess
    from covidscan.tracking.runs import log_artifact, log_dict, log_metrics, stage_run

    p = load_params(params or Path("params.yaml"), profile=profile) if (params or Path("params.yaml").is_file()) else Params()
    spec = parse_source(source)
    name, sep, version = model.partition("@") if "@" in model else model.partition("/")
    if not sep or not name or not version:
        raise ConfigError(f"--model {model!r}: expected <registered name>@<alias> or <registered name>/<version>")
    uri = f"models:/{name}@{version}" if "@" in model else f"models:/{name}/{version}"
    with stage_run("evaluate-external", p.evaluate, experiment=p.run.experiment_name, tags={"covidscan.model_uri": uri, "covidscan.source_adapter": spec.adapter}):
        with tempfile.TemporaryDirectory(prefix="covidscan-external-") as work:
            # the version's own preprocessing (recorded at registration), not the current params.yaml's
            info = export_checkpoint(name, version, Path(work) / "model.pt")
            loaded = load_model(Path(work) / "model.pt")
            pre, origin = recorded_preprocess(info["tags"], loaded.card.to_dict(), p.preprocess)
            log_dict({"version": info["version"], "origin": origin, "preprocess": pre.model_dump(mode="json")}, "preprocess.json")
            result = evaluate_external(loaded, spec, p.model_copy(update={"preprocess": pre}), out_dir, Path(work) / "data", positive=positive,
                                       preprocess_origin=f"{origin} ({info['uri']})")  # fmt: skip
        flat = {k: float(v) for k, v in flatten_metrics(result["metrics"]).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        log_metrics({k.replace("+", "_"): v for k, v in flat.items()})
        for path in sorted(Path(out_dir).rglob("*")):
            if path.is_file():
                log_artifact(path, "report")
    m = result["metrics"]
    out.print(f"{result['n']} cases; sensitivity {m['sensitivity']['point']:.4f}, specificity {m['specificity']['point']:.4f}; report: {result['card_path']}")
    out.print(RESEARCH_NOTICE)



@command("tune")
def tune_command(
    workers: Annotated[int, typer.Option("--workers", help="Worker processes sharing each study (other hosts: run this there too).")] = 1,
    target: Annotated[list[str] | None, typer.Option("--target", help="Tune only this target (student-xray, student-ct); repeatable.")] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="Budget of finished trials per study (overrides tune.n_trials).")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Journal file or RDB URL (postgresql://...); default tune.storage / $OPTUNA_STORAGE.")] = None,
    seed_offset: Annotated[int, typer.Option("--seed-offset", help="Worker i seeds its sampler with seed + offset + i; machines sharing a study take offsets that do not overlap (docs/SCALING.md).")] = 0,
    params: Annotated[Path, typer.Option("--params", help="params.yaml")] = Path("params.yaml"),
    profile: ProfileOption = None,
) -> None:
    """Run (or resume) the Optuna studies and write the tuned file (see docs/TUNING.md)."""
    from covidscan.config import load_params
    from covidscan.tracking.runs import log_study, stage_run
    from covidscan.tuning.objective import TuneData
    from covidscan.tuning.study import run_tuning

    p = load_params(params, profile=profile)
    if trials is not None:
        p = p.model_copy(update={"tune": p.tune.model_copy(update={"n_trials": trials})})
    with stage_run("tune-cli", p.tune, experiment=p.run.experiment_name):
        path = run_tuning(p, data=TuneData(PROCESSED_DIR, SPLITS_FILE), targets=target or None, storage=storage, workers=workers,
                          on_result=lambda r: log_study(f"tune {r.target}", r.entry, r.records, r.figures), seed_offset=seed_offset)  # fmt: skip
    out.print(f"tuned parameters: {path}")


@command("promote")
def promote_command(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. covidscan-student-xray.")],
    version: Annotated[str | None, typer.Option("--version", help="Version to consider (default: the newest).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote without the gate (recorded on the version as an operator's decision).")] = False,
    params: ParamsOption = Path("params.yaml"),
    profile: ProfileOption = None,
) -> None:
    """Gate a model version against the champion on its experiment's test set; move `champion` if it passes."""
    import pandas as pd

    from covidscan.config import load_params
    from covidscan.errors import DataError
    from covidscan.evaluation.promotion import GateData, gate_registered

    p = load_params(params, profile=profile)
    processed, ingest, splits = PROCESSED_DIR, INGEST_DIR, SPLITS_FILE
    for path in (splits, processed / "index.parquet", ingest / "manifest.parquet"):
        if not path.is_file():
            raise DataError(f"{path}: not found (run `dvc repro` first; the gate scores the test set)")
    clinical = ingest / "clinical.parquet"
    data = GateData(processed, pd.read_parquet(splits), pd.read_parquet(processed / "index.parquet"), pd.read_parquet(ingest / "manifest.parquet"),
                    pd.read_parquet(clinical) if clinical.is_file() else None)  # fmt: skip
    exp = p.registry.gates.get(name, "")
    ver, decision = gate_registered(name, version, p, data, Path("reports/evaluate") / exp / "model_card.html", force=force)
    out.print(f"{name} version {ver}: {'promoted to ' + p.registry.champion_alias if decision.promote else 'champion kept'} ({decision.reason})")


@command("rollback")
def rollback_command(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. covidscan-student-xray.")],
    params: ParamsOption = Path("params.yaml"),
    profile: ProfileOption = None,
) -> None:
    """Undo the last promotion: `champion` goes back to `previous-champion` (the two swap)."""
    from covidscan.config import Params, load_params
    from covidscan.tracking.registry import rollback

    p = load_params(params, profile=profile) if params.is_file() else Params()
    now, prev = rollback(name, p.registry.champion_alias, p.registry.previous_alias)
    out.print(f"{name}: {p.registry.champion_alias} -> version {now}; {p.registry.previous_alias} -> version {prev or 'none'}")

annotate_app = typer.Typer(help="The annotation platform: readers box lesions and record reads, a senior adjudicates, the export feeds ingest (docs/ANNOTATION.md).",
                           no_args_is_help=True)
app.add_typer(annotate_app, name="annotate")
DbOption = Annotated[str, typer.Option("--db", help="The store: a SQLite file, or an SQLAlchemy URL (postgresql+psycopg://...).")]
ANNOTATE_DB = "annotate.db"


def _db_url(db: str) -> str:
    from covidscan.annotate.store import default_url

    return db if "://" in db else default_url(db)


@annotate_app.command("serve")
@user_errors
def annotate_serve(
    ingest: Annotated[Path, typer.Option("--ingest", help="The ingest folder whose de-identified records are annotated.")] = INGEST_DIR,
    db: DbOption = ANNOTATE_DB,
    host: Annotated[str, typer.Option("--host", help="Address to bind; keep 127.0.0.1 and put a TLS reverse proxy in front (docs/ANNOTATION.md).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8600,
    export_dir: Annotated[Path, typer.Option("--export-dir", help="Where the admin's export writes (DVC-tracked; data.annotations).")] = ANNOTATIONS_DIR,
    secret_file: Annotated[Path, typer.Option("--secret-file", help="Session-signing secret (created 0600 at first start; or $COVIDSCAN_ANNOTATE_SECRET).")] = Path("~/.config/covidscan/annotate-secret"),
    secure_cookies: Annotated[bool, typer.Option("--secure-cookies", help="Mark the session cookie Secure (behind TLS).")] = False,
    iou_threshold: Annotated[float, typer.Option("--iou-threshold", min=0.05, max=1.0, help="Boxes of the two readers pair at IoU >= this.")] = 0.5,
    suggest_from: Annotated[str | None, typer.Option("--suggest-from", help="Offer Grad-CAM/DBSCAN boxes of this model (a registry URI, e.g. models:/covidscan-student-xray@champion).")] = None,
    params: ParamsOption = Path("params.yaml"),
    profile: ProfileOption = None,
) -> None:
    """Serve the annotation platform (FastAPI + uvicorn) over the ingest folder."""
    import uvicorn

    from covidscan.annotate import auth
    from covidscan.annotate.app import Settings, create_app
    from covidscan.annotate.cases import CaseLibrary
    from covidscan.annotate.store import open_store
    from covidscan.config import Params, load_params

    p = load_params(params, profile=profile) if params.is_file() else Params()
    library = CaseLibrary(ingest, p.preprocess)
    sessions = open_store(_db_url(db))
    suggester = None
    if suggest_from:
        from covidscan.annotate.suggest import load_suggester

        suggester = load_suggester(suggest_from, p)
    settings = Settings(secret=auth.session_secret(secret_file), secure_cookies=secure_cookies, iou_threshold=iou_threshold,
                        export_dir=export_dir, suggester=suggester)
    from covidscan.annotate.store import User

    with sessions() as session:
        if session.query(User).count() == 0:
            console.print(f"[yellow]no accounts yet:[/] create an admin with `covidscan annotate add-user NAME --role admin --db {db}`")
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] binding {host}: serve it only behind a TLS reverse proxy on a private network (docs/ANNOTATION.md)")
    out.print(f"covidscan annotate: {len(library.ids())} cases from {ingest} on http://{host}:{port}  ({RESEARCH_NOTICE})")
    uvicorn.run(create_app(library, sessions, settings), host=host, port=port, log_level="info", server_header=False)


@annotate_app.command("add-user")
@user_errors
def annotate_add_user(
    username: Annotated[str, typer.Argument(help="The account's name (letters, digits, . _ -).")],
    role: Annotated[str, typer.Option("--role", help="reader | senior | admin")],
    slot: Annotated[str | None, typer.Option("--slot", help="A reader's slot: reader1 | reader2.")] = None,
    reads_as: Annotated[str | None, typer.Option("--reads-as", help="Expert reader name of the reader's reads in reads.parquet (Respira., Emerg., Intern, Rad-5th, Rad-3rd).")] = None,
    db: DbOption = ANNOTATE_DB,
) -> None:
    """Create an account; the password comes from $COVIDSCAN_ANNOTATE_PASSWORD or is asked for (hidden)."""
    import os

    from covidscan.annotate.auth import create_user
    from covidscan.annotate.store import open_store

    password = os.environ.get("COVIDSCAN_ANNOTATE_PASSWORD") or typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with open_store(_db_url(db))() as session:
        create_user(session, username, password, role, slot, reads_as)
    out.print(f"user {username} ({role}{', ' + slot if slot else ''}) created")


@annotate_app.command("export")
@user_errors
def annotate_export(
    db: DbOption = ANNOTATE_DB,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write (then `dvc add` it; data.annotations names it).")] = ANNOTATIONS_DIR,
    iou_threshold: Annotated[float, typer.Option("--iou-threshold", min=0.05, max=1.0)] = 0.5,
) -> None:
    """Export the settled cases: annotations.csv/reads.csv (what ingest reads), annotations.json and the agreement report."""
    from covidscan.annotate.export import export
    from covidscan.annotate.store import audit, open_store

    with open_store(_db_url(db))() as session:
        summary = export(session, out_dir, iou_threshold)
        audit(session, None, "export", username="cli", n_cases=summary["n_cases"], n_boxes=summary["n_boxes"])
        session.commit()
    out.print(f"{out_dir}: {summary['n_cases']} cases, {summary['n_boxes']} boxes, {summary['n_reads']} reads; kappa of the reads {summary['kappa']}")


if __name__ == "__main__":  # pragma: no cover
    app()
