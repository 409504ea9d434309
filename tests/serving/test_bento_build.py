"""`make bento` from a checkout whose path has a dot-folder (e.g. a clone under ~/.work/covidscan):
BentoML refuses any build file whose absolute path has a part starting with a dot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.pipeline.conftest import project_files
from tests.serving import server
from tests.serving import tiny_models as tm

pytestmark = pytest.mark.slow


def test_make_bento_builds_from_a_checkout_under_a_dot_folder(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    checkout = tmp_path / ".work" / "covidscan"
    for rel in project_files():
        dest = checkout / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    store = tmp_path / "store"
    store.mkdir()
    server.register_all(store)  # tiny champions in a temporary MLflow registry
    (checkout / "params.yaml").write_text(yaml.safe_dump({"preprocess": tm.TINY_PRE.model_dump(mode="json"), "serve": server.SERVE_PARAMS}))
    env = server.environment(store)
    env.pop("COVIDSCAN_BENTO_CONFIG")
    env.pop("MAKEFLAGS", None)
    venv = Path(sys.executable).parent.parent  # the installed environment, not re-created in the checkout
    proc = subprocess.run(["make", "-o", f"{venv}/.installed", "bento", f"VENV={venv}"], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    built = sorted((store / "bentoml" / "bentos" / "covidscan").glob("*/bento.yaml"))
    assert len(built) == 1, proc.stdout[-2000:]
    bento = built[0].parent
    assert (bento / "env" / "python" / "wheels" / "covidscan-0.1.0-py3-none-any.whl").is_file()
    assert (bento / "env" / "python" / "requirements.txt").read_text().count("torch==") == 1
    assert (bento / "src" / "service.py").is_file() and (bento / "src" / "serving.json").is_file()
