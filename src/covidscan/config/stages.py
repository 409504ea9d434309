"""Which params sections each DVC stage reads (:data:`STAGE_SECTIONS`) and the effective per-stage files
``build/params/<stage>.json`` the ``configure`` stage writes from them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from covidscan.config.params import Params
from covidscan.errors import ConfigError

EFFECTIVE_DIR = Path("build/params")


# Which top-level sections each DVC stage reads. The `configure` stage writes exactly these, resolved,
# to build/params/<stage>.json, so DVC reruns a stage only when one of them changes.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "synth": ("synth", "data"),  # data: generate only when a synthetic source is declared
    "ingest": ("run", "data"),
    "split": ("run", "subsets", "splits"),
    "validate": ("subsets", "splits", "validate"),
    "preprocess": ("run", "preprocess"),
    "train_teacher": ("run", "subsets", "splits", "preprocess", "models", "train"),
    "aggregate_cv": ("run", "models", "evaluate"),
    "distill": ("run", "subsets", "splits", "preprocess", "models", "train", "evaluate", "tune"),
    "train_regressor": ("run", "subsets", "preprocess", "models", "train"),
    "train_csacnet": ("run", "subsets", "preprocess", "models", "train", "evaluate"),
    "baselines": ("run", "subsets", "preprocess", "models", "train", "evaluate"),
    "evaluate": ("run", "subsets", "splits", "experiments", "preprocess", "models", "evaluate"),
    "tune": ("run", "subsets", "splits", "preprocess", "models", "train", "tune"),
    "register": ("run", "subsets", "experiments", "preprocess", "evaluate", "registry"),
}


def effective_sections(params: Params, stage: str) -> dict[str, Any]:
    """The resolved sections a stage reads, as plain JSON-able data."""
    if stage not in STAGE_SECTIONS:
        raise ConfigError(f"unknown stage '{stage}'; known stages: {', '.join(sorted(STAGE_SECTIONS))}")
    dumped = params.model_dump(mode="json")
    return {section: dumped[section] for section in STAGE_SECTIONS[stage]}


def write_effective(params: Params, out_dir: str | Path = EFFECTIVE_DIR, stages: Iterable[str] | None = None) -> list[Path]:
    """Write build/params/<stage>.json for every stage (or only ``stages``); unchanged content keeps its
    bytes (and DVC hash)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in sorted(STAGE_SECTIONS if stages is None else stages):
        path = out_dir / f"{stage}.json"
        text = json.dumps(effective_sections(params, stage), indent=2, sort_keys=True) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written
