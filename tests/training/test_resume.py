"""SIGKILL mid-training, rerun, and the final weights equal an uninterrupted run's exactly (CPU, deterministic)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from covidscan.training.checkpoint import list_checkpoints
from tests.training.resume_script import run_training

SCRIPT = Path(__file__).with_name("resume_script.py")
ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6  # as in resume_script.py


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _start(work: Path, pause: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(work), str(pause)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    victim = _start(tmp_path / "victim", pause=0.5)  # sleeps 0.5 s after each epoch's checkpoint
    ckpt = tmp_path / "victim" / "ckpt"
    deadline = time.monotonic() + 150
    try:
        while not list_checkpoints(ckpt):
            assert victim.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "victim" / "final.pt").exists()
    completed = [int(p.stem.split("-")[1]) for p in list_checkpoints(ckpt)]
    assert max(completed) < EPOCHS - 1, "killed too late to test a resume"

    rerun = _start(tmp_path / "victim")  # rerun: must resume from the newest complete checkpoint
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the script
    try:
        run_training(tmp_path / "reference")  # the uninterrupted run, in this process meanwhile
    finally:
        torch.set_num_threads(threads)
    _finish(rerun)

    resumed = json.loads((tmp_path / "victim" / "result.json").read_text())
    uninterrupted = json.loads((tmp_path / "reference" / "result.json").read_text())
    assert resumed["resumed_from"] == max(completed)
    assert uninterrupted["resumed_from"] is None
    drop = lambda hist: [{k: v for k, v in h.items() if k != "peak_rss_mb"} for h in hist]  # noqa: E731
    assert drop(resumed["history"]) == drop(uninterrupted["history"])

    a = torch.load(tmp_path / "victim" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "reference" / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume: {different}"


@pytest.mark.parametrize("keep", [2])
def test_checkpoints_are_pruned_and_temp_files_cleaned(tmp_path, keep):
    from covidscan.training.checkpoint import save_checkpoint
    from covidscan.training.schedule import build_scheduler
    from covidscan.config import OptimConfig

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = build_scheduler(opt, OptimConfig())
    (tmp_path / ".epoch-0000.pt.abc.tmp").write_bytes(b"torn")
    for epoch in range(4):
        save_checkpoint(tmp_path, epoch, model=model, optimizer=opt, scheduler=sched, keep_last=keep)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch-0002.pt", "epoch-0003.pt"]
    assert not list(tmp_path.glob("*.tmp"))
