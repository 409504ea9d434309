"""MLflow runs for DVC stages: one run per stage instance, nested under one parent run per `dvc repro`.

This module and `registry.py` are the only places that import MLflow. Library code never starts a run;
pipeline entry points wrap their work in :func:`stage_run`.

The parent run is found by a *repro id*: ``COVIDSCAN_REPRO_ID`` when set, otherwise the process id and
start time of the ``dvc`` process that spawned the stage (every stage of one ``dvc repro`` shares it).
The first stage creates it; every stage, as it ends, moves its end time to now and marks it FAILED if
the stage failed, so its duration is the repro's and its status says whether a stage failed.

Data-parallel training (``torchrun``, :mod:`covidscan.training.distributed`): rank 0 alone talks to
MLflow. On the other ranks :func:`stage_run` starts no run and every ``log_*`` function does nothing
(:func:`is_rank_zero`). When torchrun restarts the workers after one died, rank 0's new process carries
on in the stage's run of the same torchrun launch (tag ``covidscan.torchrun_launch``) instead of
starting a second one, and tags it with the restart count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import yaml

from covidscan.environment import artifact_root, quiet_telemetry, tracking_uri

log = logging.getLogger(__name__)

PARENT_TAG = "covidscan.repro_id"
STAGE_TAG = "covidscan.stage"
LAUNCH_TAG = "covidscan.torchrun_launch"  # one torchrun launch (kept across its restarts)
RESTARTS_TAG = "covidscan.torchrun_restarts"

_F = TypeVar("_F", bound=Callable[..., Any])


def is_rank_zero() -> bool:
    """Whether this process may log: True unless torchrun set ``RANK`` to a non-zero rank (the same rule as
    :func:`covidscan.training.distributed.is_main_process`, read without importing torch)."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def rank_zero_only(func: _F) -> _F:
    """Make ``func`` do nothing (return None) on the ranks other than 0."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs) if is_rank_zero() else None

    return wrapper  # type: ignore[return-value]


def torchrun_launch() -> tuple[str, int] | None:
    """(launch id, restart count) when started by torchrun, else None. The id is torchrun's run id and the
    elastic agent's process id (the workers' parent, the same across restarts)."""
    if "TORCHELASTIC_RESTART_COUNT" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return f"{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}:{os.getppid()}", int(os.environ["TORCHELASTIC_RESTART_COUNT"] or 0)


def _mlflow():
    quiet_telemetry()
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def git_commit(cwd: str | Path = ".") -> str:
    """The current git commit (with a `-dirty` suffix when the tree has changes), or "unknown"."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def repro_id() -> str:
    """Identify the current `dvc repro` / `dvc exp run` invocation (shared by all its stages)."""
    explicit = os.environ.get("COVIDSCAN_REPRO_ID")
    if explicit:
        return explicit
    try:
        import psutil

        proc = psutil.Process(os.getpid()).parent()
        while proc is not None:
            cmd = " ".join(proc.cmdline()[:3])
            if "dvc" in Path(proc.cmdline()[0]).name or " -m dvc" in cmd or "/dvc " in f"{cmd} ":
                return f"dvc-{proc.pid}-{int(proc.create_time())}"
            proc = proc.parent()
    except Exception:  # noqa: BLE001 - best effort; fall back to a fresh id
        pass
    launch = torchrun_launch()
    if launch is not None:  # the same id for every restart of one torchrun launch
        return f"torchrun-{launch[0]}"
    return f"manual-{os.getpid()}-{int(time.time())}"


def ensure_experiment(name: str) -> str:
    """Create the MLflow experiment (local artifact folder by default, a tracking server's own artifact
    store with an ``http(s)://`` MLFLOW_TRACKING_URI; :func:`covidscan.environment.artifact_root`) and return its id."""
    mlflow = _mlflow()
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        # the kind tag makes the MLflow UI open on "Model training" (runs, charts), not the GenAI pages
        tags = {"mlflow.experimentKind": "custom_model_development"}
        return mlflow.create_experiment(name, artifact_location=artifact_root(), tags=tags)
    return exp.experiment_id


def parent_run_id(experiment: str, rid: str | None = None) -> str:
    """The parent run for this repro, created (and left finished) on first use."""
    mlflow = _mlflow()
    rid = rid or repro_id()
    exp_id = ensure_experiment(experiment)
    found = mlflow.search_runs(
        experiment_ids=[exp_id], filter_string=f"tags.`{PARENT_TAG}` = '{rid}'", max_results=1, output_format="list"
    )
    if found:
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    run = client.create_run(
        exp_id,
        run_name=f"repro {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={PARENT_TAG: rid, "covidscan.git_commit": git_commit(), "mlflow.source.git.commit": git_commit()},
    )
    client.set_terminated(run.info.run_id, "FINISHED")  # never left RUNNING; each stage stretches it
    return run.info.run_id


def extend_parent_run(client: Any, run_id: str, failed: bool) -> None:
    """Stretch the repro's parent run to now and carry a stage's failure (DVC runs each stage in its own
    process, so each stage does this as it ends): ``end_time = max(end_time, now)``; status FAILED
    once any stage failed, else FINISHED."""
    info = client.get_run(run_id).info
    end = max(info.end_time or 0, int(time.time() * 1000))
    status = "FAILED" if failed or info.status == "FAILED" else "FINISHED"
    client.set_terminated(run_id, status, end_time=end)


def mark_repro_failed(rid: str | None = None) -> list[str]:
    """Mark this repro's parent run(s) FAILED, for a stage that failed outside :func:`stage_run`.

    Looks in every experiment; does nothing when no parent exists yet (or the default sqlite store has
    not been created), nor on a torchrun rank other than 0. Returns the ids of the runs it marked.
    """
    uri = tracking_uri()
    if not is_rank_zero() or (uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()):
        return []
    mlflow = _mlflow()
    rid = rid or repro_id()
    found = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`{PARENT_TAG}` = '{rid}'", output_format="list")
    client = mlflow.MlflowClient()
    for run in found:
        extend_parent_run(client, run.info.run_id, failed=True)
    return [run.info.run_id for run in found]


_DVC_VAR = re.compile(r"\$\{\s*([\w.-]+)\s*\}")


def _dvc_interpolate(text: str, context: Mapping[str, Any]) -> str | None:
    """``text`` with each ``${a.b}`` replaced from ``context`` (dvc.yaml's inline ``vars``); None when one
    is not there (e.g. a ``foreach`` stage's ``${item}``)."""

    def value(match: re.Match[str]) -> str:
        found: Any = context
        for key in match.group(1).split("."):
            if not isinstance(found, Mapping) or key not in found:
                raise KeyError(match.group(1))
            found = found[key]
        return str(found)

    try:
        return _DVC_VAR.sub(value, text)
    except KeyError:
        return None


def dvc_dep_hashes(stage: str, dvc_yaml: str | Path = "dvc.yaml", dvc_lock: str | Path = "dvc.lock") -> dict[str, str]:
    """Hashes (from dvc.lock) of the upstream outputs this stage depends on, keyed by path (a dependency
    written with dvc.yaml's ``vars``, ``${paths.processed}``, is resolved from the inline ``vars``)."""
    try:
        doc = yaml.safe_load(Path(dvc_yaml).read_text()) or {}
        lock = yaml.safe_load(Path(dvc_lock).read_text()).get("stages", {}) if Path(dvc_lock).exists() else {}
    except (OSError, yaml.YAMLError):
        return {}
    stages = doc.get("stages", {})
    context: dict[str, Any] = {}
    for entry in doc.get("vars", []) or []:
        if isinstance(entry, Mapping):  # inline values; a params file named in `vars` is not read here
            context.update(entry)
    base = stage.split("@")[0]
    resolved = (_dvc_interpolate(d, context) for d in (stages.get(base, {}) or {}).get("deps", []) if isinstance(d, str))
    deps = [d for d in resolved if d is not None]
    outs: dict[str, str] = {}
    for entry in lock.values():
        for out in entry.get("outs", []) or []:
            outs[out["path"]] = out.get("md5") or out.get("hash", "")
    return {d: outs[d] for d in deps if d in outs}


@contextlib.contextmanager
def stage_run(stage: str, params: Any | None = None, experiment: str = "covidscan", tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Start the MLflow run of one stage instance, nested under this repro's parent run.

    As the stage ends, the parent run's end time moves to now and, if the stage raised, its status to
    FAILED (:func:`extend_parent_run`): the parent spans the whole repro and says whether it failed.

    Under torchrun the ranks other than 0 start no run (yield None); after a torchrun restart rank 0
    continues the run its launch started (:func:`torchrun_launch`).

    Args:
        stage: the DVC stage name (e.g. ``train_teacher@TS1-0``).
        params: the typed config (flattened into MLflow params) or None.
        experiment: MLflow experiment name.
        tags: extra tags.

    Yields:
        The active mlflow.ActiveRun (None on a rank other than 0).
    """
    from covidscan.config import flatten

    if not is_rank_zero():
        yield None
        return
    mlflow = _mlflow()
    parent = parent_run_id(experiment)
    exp_id = ensure_experiment(experiment)
    commit = git_commit()
    all_tags = {
        STAGE_TAG: stage,
        "covidscan.git_commit": commit,
        "mlflow.source.git.commit": commit,
        PARENT_TAG + ".child": repro_id(),
        **{f"dvc.dep.{k}": v for k, v in dvc_dep_hashes(stage).items()},
        **(tags or {}),
    }
    launch = torchrun_launch()
    earlier = None
    if launch is not None:
        all_tags[LAUNCH_TAG], all_tags[RESTARTS_TAG] = launch[0], str(launch[1])
        if launch[1] > 0:  # a restart: the run this launch started before a worker died
            found = mlflow.search_runs(
                experiment_ids=[exp_id], output_format="list", max_results=1,
                filter_string=f"tags.`{LAUNCH_TAG}` = '{launch[0]}' and tags.`{STAGE_TAG}` = '{stage}'",
            )  # fmt: skip
            earlier = found[0].info.run_id if found else None
    failed = True
    try:
        if earlier is not None:
            log.info("torchrun restart %d: continuing MLflow run %s", launch[1], earlier)
            started = mlflow.start_run(run_id=earlier, nested=True, tags={RESTARTS_TAG: all_tags[RESTARTS_TAG]})
        else:
            started = mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent, nested=True, tags=all_tags)
        with started as run:
            if params is not None:
                flat = flatten(params)
                items = list(flat.items())
                for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
                    mlflow.log_params({k: (str(v)[:6000]) for k, v in items[i : i + 100]})
            yield run
        failed = False
    finally:
        try:
            extend_parent_run(mlflow.MlflowClient(), parent, failed)
        except Exception as err:  # noqa: BLE001 - never hide the stage's own error behind this one
            log.warning("could not update the repro's parent run %s: %s", parent, err)


@rank_zero_only
def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics on the active run (non-finite values are skipped with a debug note)."""
    import math

    mlflow = _mlflow()
    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if clean:
        mlflow.log_metrics(clean, step=step)


@rank_zero_only
def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file or a folder as an artifact of the active run."""
    mlflow = _mlflow()
    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    elif path.exists():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_table_input(path: str | Path, name: str, context: str) -> str:
    """Record a Parquet/CSV table as a dataset input of the active run (with a content digest)."""
    import pandas as pd

    mlflow = _mlflow()
    path = Path(path)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    dataset = mlflow.data.from_pandas(df, source=str(path), name=name, digest=digest)
    mlflow.log_input(dataset, context=context)
    return digest


@rank_zero_only
def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    """Log a JSON-able mapping as an artifact."""
    mlflow = _mlflow()
    mlflow.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)


@rank_zero_only
def log_figure(fig: Any, artifact_file: str) -> None:
    """Log a matplotlib figure as a PNG artifact."""
    _mlflow().log_figure(fig, artifact_file)


def data_version(manifest: Path) -> str:
    """The data version a trained model is tagged and registered with: the sha256 of the ingest manifest
    file, first 16 hex digits ("" when there is none)."""
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest.is_file() else ""


class EpochLogger:
    """The training loop's callback (:func:`covidscan.training.loop.train`): logs each epoch's metrics to
    the active run (step = epoch) under ``prefix``, and keeps them in ``history``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.history: list[dict[str, float]] = []

    def __call__(self, metrics: dict[str, float]) -> None:
        self.history.append(dict(metrics))
        step = int(metrics.get("epoch", len(self.history) - 1))
        log_metrics({f"{self.prefix}{k}": v for k, v in metrics.items() if k != "epoch"}, step=step)


@rank_zero_only
def log_loss_curve(histories: Mapping[str, list[dict[str, float]]], artifact_file: str) -> None:
    """Train/val loss per epoch (:func:`covidscan.visualize.loss_curve_figure`) logged as a PNG artifact."""
    import matplotlib.pyplot as plt

    from covidscan.visualize import loss_curve_figure

    fig = loss_curve_figure(histories)
    log_figure(fig, artifact_file)
    plt.close(fig)


def log_peak_rss() -> float:
    """Log this process's peak resident memory (MB) as ``peak_rss_mb_stage``; returns it."""
    from covidscan.training.memory import peak_rss_mb

    value = peak_rss_mb()
    log_metrics({"peak_rss_mb_stage": value})
    return value


_TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def log_study(name: str, summary: Mapping[str, Any], trials: list[Mapping[str, Any]], figures: list[Path]) -> str:
    """Log a hyper-parameter study as a nested run under the active run, each trial a run nested in it.

    Args:
        name: the study run's name (e.g. ``tune student-xray``).
        summary: the study's result (best values, status, trial counts); logged as ``best_params.json``,
            its ``values`` as params and ``cv_auroc`` as a metric.
        trials: plain records (``number, state, params, value, intermediate_values, user_attrs, retry_of,
            start_ms, end_ms``): params, the final value, the intermediate values as a metric with
            steps, user attributes and the state as tags; PRUNED -> status KILLED, FAIL -> FAILED.
        figures: PNG files logged under ``figures/``.

    Returns:
        The study run's id.
    """
    from mlflow.entities import Metric, Param, RunTag

    mlflow = _mlflow()
    active = mlflow.active_run()
    exp = active.info.experiment_id if active is not None else None
    with mlflow.start_run(run_name=name, nested=True, experiment_id=exp, tags={"covidscan.study": str(summary.get("study", name))}) as run:
        values = summary.get("values", {}) or {}
        mlflow.log_params({f"best.{k}": v for k, v in values.items()})
        log_metrics({"cv_auroc": summary.get("cv_auroc", float("nan")), "n_trials": float(len(trials))})
        log_dict(dict(summary), "best_params.json")
        for path in figures:
            log_artifact(path, "figures")
        client, exp_id, parent = mlflow.MlflowClient(), run.info.experiment_id, run.info.run_id
        for t in trials:
            tags = {"mlflow.parentRunId": parent, "optuna.trial": str(t["number"]), "optuna.state": str(t["state"])}
            tags.update({f"optuna.user.{k}": str(v)[:5000] for k, v in (t.get("user_attrs") or {}).items()})
            if t.get("retry_of") is not None:
                tags["optuna.retry_of"] = str(t["retry_of"])
            child = client.create_run(exp_id, start_time=t.get("start_ms"), tags=tags, run_name=f"trial {t['number']}")
            end = t.get("end_ms") or int(time.time() * 1000)
            metrics = [Metric("val_auroc_step", float(v), end, int(step)) for step, v in sorted((t.get("intermediate_values") or {}).items())]
            if t.get("value") is not None:
                metrics.append(Metric("cv_auroc", float(t["value"]), end, 0))
            params = [Param(k, str(v)) for k, v in (t.get("params") or {}).items()]
            client.log_batch(child.info.run_id, metrics=metrics, params=params, tags=[RunTag("optuna.number", str(t["number"]))])
            client.set_terminated(child.info.run_id, _TRIAL_STATUS.get(str(t["state"]), "FAILED"), end_time=end)
        return parent
