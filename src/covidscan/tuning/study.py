"""Optuna studies: one per target, a budget of finished trials, N workers sharing the storage.

A worker loops: fail stale trials (dead workers), take the claim lock, and if the study still has
budget (``tune.n_trials`` minus finished, running and queued trials; a failed trial that was retried
does not count) or a queued retry, start one trial (``study.optimize(n_trials=1)``: heartbeat, TPE,
pruner) and release the lock as soon as the trial exists. With no budget left it waits while other
workers' trials are running (they may die and be retried), then stops. So any number of workers, on
one host (journal file) or many (PostgreSQL), finish exactly the budget; a killed study continues
where it stopped when run again.

``tune.timeout_minutes`` stops starting new trials after that long (per call).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from covidscan.config import Params
from covidscan.environment import optuna_storage
from covidscan.errors import ConfigError, CovidscanError
from covidscan.tuning.objective import Objective, TuneData
from covidscan.tuning.storage import HOST, ClaimLock, open_storage
from covidscan.tuning.tuned import apply_values, configured_values, target_task

log = logging.getLogger(__name__)

WORKER_KEY = "covidscan.worker"  # trial system attribute: the host, process id and worker index that ran it


@dataclass
class Budget:
    """How a study stands against its budget."""

    finished: int  # COMPLETE + PRUNED + FAIL that was not retried
    running: int
    waiting: int
    budget: int

    @property
    def left(self) -> int:
        return self.budget - self.finished - self.running - self.waiting


def study_name(params: Params, target: str) -> str:
    return f"{params.tune.study_name}-{target}"


def storage_location(params: Params, override: str | None = None) -> str:
    """``--storage``, else ``tune.storage``, else ``$OPTUNA_STORAGE`` / build/optuna/journal.log."""
    return override or params.tune.storage or optuna_storage()


def budget(study: optuna.Study, n_trials: int) -> Budget:
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = sum(1 for t in trials if t.state in done or (t.state == TrialState.FAIL and t.number not in retried))
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    return Budget(finished, running, waiting, n_trials)


def _pruner(params: Params, steps: int) -> optuna.pruners.BasePruner:
    t = params.tune
    if t.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=t.pruner_startup_trials, n_warmup_steps=t.pruner_warmup_steps)
    if t.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, steps))
    return optuna.pruners.NopPruner()


def load_study(params: Params, target: str, storage: str, worker: int = 0) -> optuna.Study:
    """Create or load the target's study (maximise the CV AUROC) with a seeded TPE sampler (seed + worker)."""
    t = params.tune
    seed = (t.sampler_seed if t.sampler_seed is not None else params.run.seed) + worker
    epochs = t.epochs or params.train.classifier.epochs
    steps = epochs * (t.folds or params.splits.n_folds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        backend = open_storage(storage, t)
        return optuna.create_study(
            study_name=study_name(params, target), storage=backend, direction="maximize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=t.sampler_startup_trials), pruner=_pruner(params, steps),
        )  # fmt: skip


def run_worker(params: Params, target: str, data: TuneData, storage: str, worker: int = 0, deadline: float | None = None) -> int:
    """Run trials of one study until its budget is finished (or ``deadline``, a ``time.time()``).

    Returns:
        How many trials this worker ran.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(params, target, storage, worker)
    lock = ClaimLock(storage, study._storage, study.study_name)
    n_trials, ran = params.tune.n_trials, 0
    objective: Objective | None = None
    while deadline is None or time.time() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        lock.acquire()
        try:
            state = budget(study, n_trials)
            if state.waiting == 0 and state.left <= 0:
                lock.release()
                if state.running == 0:
                    break
                time.sleep(params.tune.poll_seconds)  # others' trials in flight: they may die and be retried
                continue
            objective = objective or Objective(params, target, data)  # under the lock: loads the data once

            def claimed(trial: optuna.Trial, objective: Objective = objective) -> float:
                lock.release()  # the trial exists (RUNNING): others may claim the next one
                study._storage.set_trial_system_attr(trial._trial_id, WORKER_KEY, {"host": HOST, "pid": os.getpid(), "worker": worker})
                return objective(trial)

            study.optimize(claimed, n_trials=1, catch=(RuntimeError,), gc_after_trial=True)
            ran += 1
        finally:
            lock.release()
    return ran


def _worker_main(params_json: str, target: str, data: TuneData, storage: str, worker: int, deadline: float | None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    run_worker(Params.model_validate_json(params_json), target, data, storage, worker, deadline)


def optimize(params: Params, target: str, data: TuneData, storage: str, workers: int = 1, seed_offset: int = 0) -> optuna.Study:
    """Run a target's study to its budget with ``workers`` processes (1: in this process).

    Worker i seeds its sampler with ``seed + seed_offset + i``: machines sharing one study (PostgreSQL)
    take offsets that do not overlap (0 for the first machine's workers, its worker count for the next,
    ...), else their samplers draw the same first values.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if seed_offset < 0:
        raise ConfigError(f"--seed-offset must be >= 0, got {seed_offset}")
    target_task(target)
    study = load_study(params, target, storage)
    study.set_user_attr("target", target)
    deadline = time.time() + 60 * params.tune.timeout_minutes if params.tune.timeout_minutes else None
    if params.tune.n_trials == 0:
        return study
    if workers == 1:
        run_worker(params, target, data, storage, seed_offset, deadline)
        return study
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(params.model_dump_json(), target, data, storage, seed_offset + i, deadline), name=f"tune-worker-{i}")
             for i in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.name for p in procs if p.exitcode != 0]
    if bad:
        raise CovidscanError(f"tuning workers {', '.join(bad)} failed (see their log above); the study continues when run again")
    return study


# ------------------------------------------------------------------------------- results
def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """A trial as plain data (for MLflow): number, state, params, value, intermediate values, attrs, times."""
    return {
        "number": trial.number, "state": trial.state.name, "params": dict(trial.params),
        "value": trial.value if trial.value is not None and math.isfinite(trial.value) else None,
        "intermediate_values": {int(k): float(v) for k, v in trial.intermediate_values.items()},
        "user_attrs": {k: v for k, v in trial.user_attrs.items()},
        "retry_of": trial.system_attrs.get("failed_trial"),
        "start_ms": int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None,
        "end_ms": int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None,
    }  # fmt: skip


@dataclass
class TargetResult:
    """What :func:`tune_target` produced for one target."""

    target: str
    study_name: str
    entry: dict[str, Any]  # the target's section of params/tuned.yaml
    records: list[dict[str, Any]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def tuned_entry(params: Params, study: optuna.Study, n_trials: int) -> dict[str, Any]:
    """The tuned-file section: the best completed trial's values, or the configured ones (untuned)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    if n_trials == 0 or not complete:
        values = configured_values(params)
        return {"status": "untuned", "study": study.study_name, "budget": n_trials, "trials": counts, "values": values,
                "apply": apply_values(params, values)}  # fmt: skip
    best = study.best_trial
    values = {**configured_values(params), **best.params}
    return {"status": "tuned", "study": study.study_name, "budget": n_trials, "trials": counts, "best_trial": best.number,
            "cv_auroc": float(best.value), "values": values, "apply": apply_values(params, values)}  # fmt: skip


def write_figures(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importances (>= 2 completed trials) and slice plots as PNGs."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots: list[tuple[str, Callable[[], Any]]] = []
    if complete:
        plots += [("optimization_history", lambda: ovm.plot_optimization_history(study)), ("slice", lambda: ovm.plot_slice(study))]
    varied = {k for t in complete for k in t.params if len({u.params.get(k) for u in complete}) > 1}
    if len(complete) >= 2 and varied:
        plots.append(("param_importances", lambda: ovm.plot_param_importances(study)))
    written = []
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = plot()
            except (ValueError, RuntimeError) as err:  # e.g. importances of a degenerate study
                log.warning("%s: %s plot skipped (%s)", study.study_name, name, err)
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        fig.set_size_inches(max(6.0, fig.get_size_inches()[0]), 4.0)
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def tune_target(params: Params, target: str, *, data: TuneData, storage: str, workers: int = 1, out_dir: Path | None = None,
                seed_offset: int = 0) -> TargetResult:  # fmt: skip
    """Run (or resume) a target's study to its budget and collect its results (tuned entry, trials, figures)."""
    study = optimize(params, target, data, storage, workers, seed_offset)
    study = load_study(params, target, storage)  # fresh view of everything the workers wrote
    result = TargetResult(target, study.study_name, tuned_entry(params, study, params.tune.n_trials))
    result.records = [trial_record(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if out_dir is not None:
        result.figures = write_figures(study, out_dir)
    log.info("%s: %s (%s)", target, result.entry["status"], result.entry["trials"])
    return result


def run_tuning(
    params: Params, *, data: TuneData, targets: list[str] | None = None, storage: str | None = None, workers: int = 1,
    reports: Path = Path("reports/tuning"), on_result: Callable[[TargetResult], None] | None = None, seed_offset: int = 0,
) -> Path:  # fmt: skip
    """Tune every target (``tune.targets`` or ``targets``) and write the tuned file (``tune.output``).

    Targets not run this time keep their entries in the file. ``on_result`` gets each target's result
    (the entry points log it to MLflow with :func:`covidscan.tracking.runs.log_study`). ``seed_offset``: see
    :func:`optimize`.
    """
    from covidscan.tuning.tuned import read_tuned, write_tuned

    location = storage_location(params, storage)
    entries: dict[str, dict[str, Any]] = {}
    for target in targets or list(params.tune.targets):
        result = tune_target(params, target, data=data, storage=location, workers=workers, out_dir=Path(reports) / target, seed_offset=seed_offset)
        if on_result is not None:
            on_result(result)
        entries[target] = result.entry
    return write_tuned(params.tune.output, {**read_tuned(params.tune.output), **entries})
