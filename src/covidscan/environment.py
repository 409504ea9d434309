"""Process environment: telemetry off everywhere, embedded defaults for MLflow and Optuna storage.

Called once by the CLI and by every pipeline entry point before MLflow, DVC, BentoML or Great
Expectations are imported.
"""

from __future__ import annotations

import os
from pathlib import Path

TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_USAGE_TRACKING": "false",
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
}

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlartifacts"
DEFAULT_OPTUNA_STORAGE = "build/optuna/journal.log"


def quiet_telemetry() -> None:
    """Switch telemetry off for MLflow, BentoML, DVC and Great Expectations (idempotent)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the embedded sqlite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def is_tracking_server(uri: str) -> bool:
    """Whether the tracking URI names an MLflow tracking server (``http(s)://``) rather than a store on this machine."""
    return uri.startswith(("http://", "https://"))


def artifact_root() -> str | None:
    """Where a new MLflow experiment keeps its artifacts: ``COVIDSCAN_ARTIFACT_ROOT`` when set; else, with a
    tracking server, None (the server's own default: its served artifact store, which every machine
    reaches through the server); else the local folder ``mlartifacts``."""
    explicit = os.environ.get("COVIDSCAN_ARTIFACT_ROOT")
    if explicit:
        return explicit
    if is_tracking_server(tracking_uri()):
        return None
    return Path(DEFAULT_ARTIFACT_ROOT).resolve().as_uri()


def optuna_storage() -> str:
    """OPTUNA_STORAGE when set (e.g. a PostgreSQL URL), else a local journal file."""
    return os.environ.get("OPTUNA_STORAGE", DEFAULT_OPTUNA_STORAGE)
