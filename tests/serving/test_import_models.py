"""`bento/import_models.py` with only some models registered: the others are skipped and named as not served.

Many deployments have no CT-slice model (``covidscan-student-ct-slice``): the bento must still be built
from what is registered, and ``serving.json`` must say which registered names were missing (the
service's ``/info`` reports them and its 503s name them).
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.serving import server as srv
from tests.serving import tiny_models as tm

pytestmark = pytest.mark.slow


def test_roles_without_a_registered_model_are_listed_as_not_served(tmp_path):
    env = srv.environment(tmp_path)
    script = (
        "from tests.serving import tiny_models as tm\n"
        "from covidscan.tracking.registry import set_alias\n"
        "for role in ('xray', 'ct2d'):\n"
        "    set_alias(tm.NAMES[role], 'champion', tm.register(tm.build(role, seed=1), tm.NAMES[role]))\n"
    )
    subprocess.run([srv.PYTHON, "-c", script], env=env, cwd=srv.ROOT, check=True, capture_output=True, timeout=300)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"preprocess": tm.TINY_PRE.model_dump(mode="json")}))
    proc = subprocess.run([srv.PYTHON, "bento/import_models.py", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "serving.json")],
                          env=env, cwd=srv.ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "serving.json").read_text())
    assert set(config["models"]) == {"xray", "ct2d"}
    assert config["not_served"] == {"ctslice": "covidscan-student-ct-slice@champion", "ct3d": "covidscan-csacnet@champion",
                                    "indicators": "covidscan-cnnrf@champion"}  # fmt: skip
    assert "covidscan-student-ct-slice: no version under alias 'champion'" in proc.stderr
