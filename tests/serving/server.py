"""A real `bentoml serve` of bento/service.py for the tests: a temporary MLflow registry with tiny models,
`bento/import_models.py` into a temporary BentoML home, the server on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from tests.serving import tiny_models as tm

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BENTOML = str(Path(sys.executable).with_name("bentoml"))

# Small limits so the hostile corpus runs in seconds.
SERVE_PARAMS = {
    "max_body_mb": 2.0,
    "body_timeout_s": 3.0,
    "max_concurrency": 4,
    "max_files": 40,
    "max_unzipped_mb": 8.0,
    "max_image_pixels": 1024 * 1024,
    "max_npy_mb": 4.0,
    "decode_memory_mb": 1024.0,
    "decode_timeout_s": 30.0,
    "max_latency_ms": 500,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(tmp: Path, registry: str | None = None) -> dict[str, str]:
    """The service's environment: a sqlite MLflow store in ``tmp``, or the tracking server ``registry``."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry or f"sqlite:///{tmp}/mlflow.db",
        "COVIDSCAN_ARTIFACT_ROOT": (tmp / "mlartifacts").as_uri(),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "COVIDSCAN_BENTO_CONFIG": str(tmp / "serving.json"),
        "COVIDSCAN_DEVICE": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    if registry:
        env.pop("COVIDSCAN_ARTIFACT_ROOT")  # the server's own artifact store
    return env


@dataclass
class Served:
    url: str
    tmp: Path
    log: Path
    config: dict
    process: subprocess.Popen

    def bundles(self) -> dict[str, Path]:
        """Role -> the BentoML model folder the server loaded (to build the package's own predictor)."""
        home = self.tmp / "bentoml" / "models"
        return {role: home / tag.split(":")[0] / tag.split(":")[1] for role, tag in self.config["models"].items()}

    def alive(self) -> bool:
        return requests.get(f"{self.url}/readyz", timeout=10).status_code == 200


# role -> checkpoint file name in a models folder (``make demo``'s models/), for start(models_dir=...)
def _trained(path: Path) -> bool:
    """A checkpoint, not the 0-byte marker of a stage that had nothing to train (the demo has no CT slices)."""
    from covidscan.models.zoo import is_empty_model

    return path.is_file() and not is_empty_model(path)


MODEL_FILES = {"xray": "student-xray.pt", "ct2d": "student-ct.pt", "ct3d": "csacnet.pt", "ctslice": "student-ct-slice.pt", "indicators": "cnnrf.pt"}


def register_all(tmp: Path, models_dir: Path | None = None) -> dict[str, str]:
    """Register one model per role and make it champion (in a child process: its own MLflow env).

    Tiny models by default; with ``models_dir``, each role's checkpoint there (``MODEL_FILES``, e.g. the
    demo's ``models/``), a tiny model for a role without one. Returns role -> "tiny" or the file used.
    """
    used = {role: str(models_dir / f) if models_dir is not None and _trained(models_dir / f) else "tiny" for role, f in MODEL_FILES.items()}
    script = (
        "import json, sys\n"
        "from tests.serving import tiny_models as tm\n"
        "from covidscan.models.zoo import load_model\n"
        "from covidscan.tracking.registry import set_alias\n"
        "used = json.loads(sys.argv[1])\n"
        "for role, name in tm.NAMES.items():\n"
        "    model = tm.build(role, seed=1) if used[role] == 'tiny' else load_model(used[role])\n"
        "    set_alias(name, 'champion', tm.register(model, name))\n"
    )
    subprocess.run([PYTHON, "-c", script, json.dumps(used)], env=environment(tmp), cwd=ROOT, check=True, capture_output=True, timeout=600)
    return used


def start(tmp: Path, timeout_s: float = 120.0, models_dir: Path | None = None, preprocess: dict | None = None, registry: str | None = None) -> Served:
    """Register, import, serve; returns when /readyz answers 200.

    Args:
        tmp: an empty folder (MLflow store, BentoML home, log).
        timeout_s: how long the server may take to become ready.
        models_dir: checkpoints to serve instead of tiny models (see :func:`register_all`).
        preprocess: the ``preprocess`` params (default: the tiny models'; sizes are aligned to each model's card).
        registry: an MLflow tracking server (``http://...``) whose champions are served as they are: nothing
            is registered, and roles without a champion are not served (as with ``make serve``).
    """
    env = environment(tmp, registry)
    if registry is None:
        register_all(tmp, models_dir)
    params = {"preprocess": preprocess or tm.TINY_PRE.model_dump(mode="json"), "serve": SERVE_PARAMS}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([PYTHON, "bento/import_models.py", "--params", str(tmp / "params.yaml"), "--out", str(tmp / "serving.json")],
                   env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)  # fmt: skip
    port = free_port()
    log = tmp / "service.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([BENTOML, "serve", "service:Covidscan", "--host", "127.0.0.1", "--port", str(port)],
                                cwd=ROOT / "bento", env=env, stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    served = Served(f"http://127.0.0.1:{port}", tmp, log, json.loads((tmp / "serving.json").read_text()), proc)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if served.alive():
                return served
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop(served)
    raise RuntimeError(f"bentoml serve not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(served: Served) -> None:
    """Stop the server and every worker it started."""
    stop_tree(served.process)


def stop_tree(process: subprocess.Popen) -> None:
    """Terminate a server process and every process it started (their ids found before stopping)."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()
