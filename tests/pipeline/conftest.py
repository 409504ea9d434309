"""A real copy of the project in a temporary git repository, for real `dvc repro` runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def ran_stages(output: str) -> set[str]:
    """Stage names DVC actually ran, from its 'Running stage' lines."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def copy_project(repo: Path, profile: str) -> tuple[Path, dict[str, str]]:
    """The project copied into ``repo`` as a fresh git repo with ``profile``, its own salt and MLflow store."""
    for rel in project_files():
        dest = repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    params = repo / "params.yaml"
    params.write_text(re.sub(r"(?m)^profile: \w+", f"profile: {profile}", params.read_text()))
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        COVIDSCAN_SALT="test-salt-not-secret",
        MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}",
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid",
    )
    env.pop("COVIDSCAN_REPRO_ID", None)
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "project copy"], repo, env)
    return repo, env


@pytest.fixture(scope="session")
def dvc_project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The project copied into a fresh git repo with `profile: tiny`, its own salt and MLflow store."""
    return copy_project(tmp_path_factory.mktemp("project"), "tiny")


@pytest.fixture(scope="session")
def demo_repro(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The project on the demo profile after a real `dvc repro evaluate@CA` (synth ... CNNRF's
    evaluation: about 3 minutes on 2 cores); shared by the demo-scale tests."""
    repo, env = copy_project(tmp_path_factory.mktemp("demo-project"), "demo")
    run(["dvc", "repro", "evaluate@CA"], repo, dict(env, OMP_NUM_THREADS="2"), timeout=1500)
    return repo, env
