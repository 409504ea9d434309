"""Data-parallel training (covidscan.training.distributed) for real: 2 ranks with gloo on the CPU.

- A tiny project (X-ray images for the teacher and the student, CT volumes for CSAC-Net; the covid19
  images are brighter, so a trained model separates them) is trained by the real stage modules
  (``pipelines.train_teacher``, ``distill``, ``train_csacnet``) once in one process and once with 2 ranks:
  the 2-rank run finishes, rank 0 alone logged to MLflow (one run per stage, in the project's own sqlite
  store), and each model's validation AUROC is in the band of the one-process run.
- The 2-rank teacher stage is started plainly, as dvc.yaml does, with ``run.distributed.nproc_per_node: 2``:
  it relaunches itself under torchrun; one rank is SIGKILLed once a checkpoint exists; torchrun restarts
  the workers, the restart resumes from the newest checkpoint and continues the same MLflow run. The
  student and CSAC-Net then run under ``torchrun --nproc-per-node 2`` (tests/training/ddp_stages.py runs
  several stages in one start-up; the one-process project runs all three through it).
- A BatchNorm-free gated CNN trained with 2 ranks gives the one-process weights (gradients averaged over
  the ranks, the same samples per step, the gate fed the sensitivity of the whole validation set).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from covidscan.config import DistributedConfig, OptimConfig, RunConfig, parse_params, write_effective
from covidscan.training import distributed as ddp
from covidscan.training.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 14
RAW = {
    "run": {"num_workers": 0, "seed": 3, "device": "cpu"},
    "splits": {"n_folds": 2},
    "preprocess": {"xray_size": 32, "ct_slices": 3, "ct_size": 32, "volume_size": 32, "volume_slices": 8},
    "models": {
        "teachers": ["TS1"],
        "cnncf": {"stem_width": 2, "widths_stage1": [4, 4], "width_stage1_b": 4, "widths_stage2": [4, 4], "width_stage2_b": 4,
                  "stride_a": 2, "stride_b": 1, "ths_sens": 0.0, "ths_count": 1},
        "csacnet": {"base_width": 2},
    },
    "train": {"keep": "best", "classifier": {"epochs": EPOCHS, "batch_size": 8, "warmup_epochs": 0, "lr": 0.01},
              "csacnet": {"epochs": 8, "batch_size": 8, "optimizer": "adam", "lr": 0.002, "warmup_epochs": 0, "weight_decay": 0.0}},
}  # fmt: skip
# The band: on this data the one-process run separates the classes (validation AUROC >= 0.9 for the weights
# kept, train.keep: best, as a few optimiser steps on 16-30 samples swing the last epoch's AUROC); the 2-rank
# run sees the same samples with the same augmentations and the same global batch, but BatchNorm normalises
# each rank's half batch on the CPU (no SyncBatchNorm there), so its weights differ: it must reach the
# same floor and be within 0.1 of the one-process AUROC.
AUROC_FLOOR, AUROC_BAND = 0.9, 0.1


def write_project(root: Path, nproc: int) -> None:
    """data/processed (index + arrays), data/splits and build/params/<stage>.json for the three stages."""
    rng = np.random.default_rng(0)
    rows, splits = [], []
    for sub in ("xray", "volume"):
        (root / "data/processed" / sub).mkdir(parents=True, exist_ok=True)
    (root / "data/splits").mkdir(parents=True, exist_ok=True)
    for i in range(60):  # X-ray: 20 per class, folds 0/1, train-val only
        label = ("normal", "pneumonia", "covid19")[i % 3]
        rid = f"x{i:03d}"
        x = rng.integers(0, 90, (3, 32, 32)) + (110 if label == "covid19" else 0)
        np.save(root / f"data/processed/xray/{rid}.npy", x.astype(np.uint8))
        rows.append({"record_id": rid, "label": label, "input_kind": "xray", "image_path": f"xray/{rid}.npy", "volume_path": ""})
        splits.append({"record_id": rid, "subset": "XMDS", "part": "trainval", "fold": (i // 3) % 2, "binary_label": int(label == "covid19"),
                       "group_id": f"g-{rid}"})  # fmt: skip
    for i in range(40):  # CT volumes: 32 train-val (folds 0/1), 8 test
        covid = i % 2 == 1
        rid = f"v{i:03d}"
        v = rng.uniform(0.0, 0.5, (8, 32, 32)) + (0.35 if covid else 0.0)
        np.save(root / f"data/processed/volume/{rid}.npy", v.astype(np.float16))
        rows.append({"record_id": rid, "label": "covid19" if covid else "normal", "input_kind": "ct_volume", "image_path": "",
                     "volume_path": f"volume/{rid}.npy"})  # fmt: skip
        part = "trainval" if i < 32 else "test"
        splits.append({"record_id": rid, "subset": "CSDS", "part": part, "fold": (i // 2) % 2 if part == "trainval" else -1,
                       "binary_label": int(covid), "group_id": f"g-{rid}"})  # fmt: skip
    pd.DataFrame(rows).to_parquet(root / "data/processed/index.parquet", index=False)
    pd.DataFrame(splits).to_parquet(root / "data/splits/splits.parquet", index=False)
    raw = copy.deepcopy(RAW)
    raw["run"]["distributed"] = {"nproc_per_node": nproc, "max_restarts": 1, "timeout_s": 120}
    write_effective(parse_params(raw), root / "build" / "params", stages=["train_teacher", "distill", "train_csacnet"])


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COVIDSCAN_REPRO_ID="ddp-test")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    env["COVIDSCAN_ARTIFACT_ROOT"] = (root / "mlartifacts").as_uri()
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT"):
        env.pop(key, None)
    return env


TEACHER = ["-m", "pipelines.train_teacher", "--teacher", "TS1", "--fold", "0", "--out", "models/teachers", "--checkpoints", "build/ckpt"]
STAGES = ("train_teacher@TS1", "distill", "train_csacnet")  # as tests/training/ddp_stages.py runs them
SCRIPTS = Path(__file__).parent


def _finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-8000:]
    return out


def _aurocs(root: Path) -> dict[str, float]:
    """Each stage's validation AUROC of the weights kept: the teacher's fold 0 (its out-of-fold predictions),
    the student's (metrics/distill.json), CSAC-Net's (its best epoch's)."""
    from covidscan.evaluation.curves import auroc_exact

    oof = pd.read_parquet(root / "models/teachers/xray/TS1-f0.oof.parquet")
    distill = json.loads((root / "metrics/distill.json").read_text())
    csac = torch.load(root / "models/csacnet.pt", weights_only=True)
    return {
        "teacher": auroc_exact((oof["y"] == 2).to_numpy(), oof["p_covid19"].to_numpy()),
        "student": float(distill["xray"]["student_val_auroc"]),
        "csacnet": max(float(h["val_auroc"]) for h in csac["extra"]["history"]),  # the epoch train.keep=best kept
    }


def _stage_runs(root: Path) -> dict[str, list]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("covidscan")
    runs: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id], max_results=200):
        stage = r.data.tags.get("covidscan.stage")
        if stage:
            runs.setdefault(stage, []).append(r)
    return runs


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The process id of torchrun's worker ``rank`` below ``launcher`` (None until it is started)."""
    import psutil

    for proc in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if proc.environ().get("RANK") == str(rank) and "pipelines.train_teacher" in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.Error:
            continue
    return None


def _teacher_killing_rank_1(root: Path) -> tuple[str, int]:
    """The teacher stage started plainly (it relaunches itself under torchrun); rank 1 SIGKILLed as soon as
    the first checkpoint exists. Returns the stage's output and the killed process id."""
    launcher = subprocess.Popen([sys.executable, *TEACHER], cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    killed = None
    try:
        while killed is None:
            assert launcher.poll() is None, "the run ended before a checkpoint appeared: " + (launcher.stdout.read() if launcher.stdout else "")[-4000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            if list(root.glob("build/ckpt/xray/TS1-f0/*/epoch-*.pt")):
                killed = _rank_pid(launcher, 1)
                if killed is not None:
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
        return _finish(launcher), killed
    finally:
        launcher.kill()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """The three stages in one process and with 2 ranks (at the same time), each in its own tiny project.

    ``ddp/teacher.log``: the teacher stage with a rank killed (and ``killed_pid``); ``stages.log``: the rest.
    """
    roots = {name: tmp_path_factory.mktemp(name) for name in ("single", "ddp")}
    write_project(roots["single"], 1)
    write_project(roots["ddp"], 2)
    single = subprocess.Popen([sys.executable, str(SCRIPTS / "ddp_stages.py")], cwd=roots["single"], env=_env(roots["single"]),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        out, killed = _teacher_killing_rank_1(roots["ddp"])
        (roots["ddp"] / "teacher.log").write_text(out)
        (roots["ddp"] / "killed_pid").write_text(str(killed))
        rest = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(SCRIPTS / "ddp_stages.py"),
                               "distill", "train_csacnet"], cwd=roots["ddp"], env=_env(roots["ddp"]), capture_output=True, text=True, timeout=400)  # fmt: skip
        assert rest.returncode == 0, rest.stdout[-3000:] + rest.stderr[-6000:]
        (roots["ddp"] / "stages.log").write_text(rest.stderr)
        (roots["single"] / "stages.log").write_text(_finish(single))
    finally:
        single.kill()
    return roots


def test_two_ranks_finish_and_rank_0_alone_logs(trained):
    root = trained["ddp"]
    log = (root / "stages.log").read_text()
    assert "rank 1/2 joined the process group (gloo, cpu)" in log and "rank 1/2 joined" in (root / "teacher.log").read_text()
    for path in ("models/teachers/xray/TS1-f0.pt", "models/student-xray.pt", "models/csacnet.pt", "metrics/distill.json"):
        assert (root / path).stat().st_size > 0, path
    for folder in ("build/checkpoints/students/xray/kd/f0", "build/checkpoints/students/xray/nokd/f0", "build/checkpoints/csacnet/f0"):
        assert list_checkpoints(next((root / folder).iterdir())), folder  # resumable, as the teacher's
    runs = _stage_runs(root)
    for stage in STAGES:
        assert len(runs.get(stage, [])) == 1, f"{stage}: {len(runs.get(stage, []))} MLflow runs (rank 0 alone must log)"
        assert runs[stage][0].info.status == "FINISHED"
    teacher = runs["train_teacher@TS1"][0]
    assert runs["distill"][0].data.tags["covidscan.torchrun_restarts"] == "0"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    everything = client.search_runs([client.get_experiment_by_name("covidscan").experiment_id], max_results=200)
    assert len(everything) == 1 + len(STAGES)  # the repro's parent and the stage runs: no stray run from rank 1
    for name in ("covidscan-student-xray", "covidscan-csacnet"):  # registered once
        assert len(client.search_model_versions(f"name='{name}'")) == 1, name
    # one value per epoch: the ranks' gathered validation, logged once
    history = client.get_metric_history(teacher.info.run_id, "xray/f0/val_auroc")
    assert sorted(m.step for m in history) == list(range(EPOCHS))
    # the one-process run's MLflow runs carry no torchrun tag
    single = _stage_runs(trained["single"])
    assert "covidscan.torchrun_launch" not in single["train_teacher@TS1"][0].data.tags


def test_two_ranks_reach_the_one_process_auroc_band(trained):
    one, two = _aurocs(trained["single"]), _aurocs(trained["ddp"])
    print(f"validation AUROC, one process {one}, 2 ranks {two}")
    for model in one:
        assert one[model] >= AUROC_FLOOR, f"{model}: the one-process run does not separate the tiny data ({one[model]:.3f})"
        assert two[model] >= AUROC_FLOOR and abs(two[model] - one[model]) <= AUROC_BAND, f"{model}: 2 ranks {two[model]:.3f} vs one {one[model]:.3f}"
    # the gate opened on the sensitivity of the whole validation fold (gathered from both ranks)
    ckpt = torch.load(trained["ddp"] / "models/teachers/xray/TS1-f0.pt", weights_only=True)
    assert ckpt["extra"]["gate_opened"] is True


def test_sigkill_of_a_rank_then_torchrun_restart_resumes(trained):
    root = trained["ddp"]
    out = (root / "teacher.log").read_text()
    assert "torch.distributed.run --standalone --nproc-per-node=2 --max-restarts=1" in out  # the stage relaunched itself
    assert f"failed (exitcode: -9) local_rank: 1 (pid: {(root / 'killed_pid').read_text()})" in out  # torchrun saw the SIGKILL
    resumed = [line for line in out.splitlines() if "resuming from" in line]
    assert len(resumed) == 2, out[-4000:]  # both restarted ranks, from the same checkpoint
    completed = {int(line.split("(epoch ")[1].split(" of")[0]) for line in resumed}
    assert len(completed) == 1 and 0 < completed.pop() < EPOCHS, resumed
    (ckpt_dir,) = root.glob("build/ckpt/xray/TS1-f0/*")
    assert int(list_checkpoints(ckpt_dir)[-1].stem.split("-")[1]) == EPOCHS - 1
    # one MLflow run for the stage, continued by the restart (tagged with it), every epoch logged once
    from mlflow import MlflowClient

    (run,) = _stage_runs(root)["train_teacher@TS1"]
    assert run.data.tags["covidscan.torchrun_restarts"] == "1" and run.info.status == "FINISHED"
    history = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").get_metric_history(run.info.run_id, "xray/f0/train_loss")
    assert sorted(m.step for m in history) == list(range(EPOCHS))


def test_two_ranks_give_the_one_process_weights_without_batchnorm(tmp_path):
    """Gradients synchronised: 2 ranks x 4 samples = the one-process batch of 8, step for step."""
    from tests.training.ddp_equivalence_script import run
    from tests.training.standins import write_blobs

    items = {"train": write_blobs(tmp_path / "train", 32, seed=1), "val": write_blobs(tmp_path / "val", 15, seed=2)}
    (tmp_path / "items.json").write_text(json.dumps(items))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                             str(SCRIPTS / "ddp_equivalence_script.py"), str(tmp_path)], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run(tmp_path)  # the same training in this process, meanwhile
    finally:
        torch.set_num_threads(threads)
    _finish(proc, timeout=240)
    two = torch.load(tmp_path / "result.pt", weights_only=True)
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert two["gate_opened_epoch"] == one["gate_opened_epoch"] is not None
    for h1, h2 in zip(one["history"], two["history"], strict=True):  # validation gathered from both ranks: the whole set
        assert h2["val_auroc"] == pytest.approx(h1["val_auroc"], abs=1e-6) and h2["val_aux_sensitivity"] == h1["val_aux_sensitivity"]
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-4)


# ----------------------------------------------------------------------------- the pieces, in process
def test_sharded_sampler_splits_the_one_process_epoch():
    """The ranks' shards cover the one-process order (padded to a multiple of the world), each sample with
    the augmentation seed of its global position."""
    from covidscan.training.data import EpochSampler

    class Ten(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 10

    one = EpochSampler(10, seed=5)
    one.set_epoch(3)
    shards = []
    for rank in range(3):
        s = ddp.ShardedEpochSampler(Ten(), 5, ddp.DistributedContext(world_size=3, rank=rank))
        s.set_epoch(3)
        shards.append(list(s))
        assert len(s) == 4
    merged = [shards[p % 3][p // 3] for p in range(10)]
    assert merged == list(one)
    assert shards[1][3][0] == list(one)[0][0]  # padding repeats the head of the order


def test_single_process_is_untouched():
    """Without torchrun: no process group, the CPU device unchanged, no relaunch with nproc_per_node 1."""
    assert "WORLD_SIZE" not in os.environ
    ctx, device = ddp.setup(DistributedConfig(), torch.device("cpu"))
    assert not ctx.enabled and ctx.is_main and device == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    assert ddp.relaunch_under_torchrun(DistributedConfig(), "pipelines.train_teacher", []) is None
    assert RunConfig().distributed.nproc_per_node == 1
    with pytest.raises(Exception, match="no SyncBatchNorm on the CPU"):
        ddp.use_sync_batchnorm(DistributedConfig(sync_batchnorm="on"), torch.device("cpu"), ddp.DistributedContext(2, 0, 0))
    assert OptimConfig().batch_size == 32 and ddp.per_rank_batch(32, ddp.DistributedContext(3, 0, 0)) == 11
