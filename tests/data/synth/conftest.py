"""One tiny synthetic dataset per test session (generation takes a few seconds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from covidscan.config import SynthConfig
from covidscan.data.synth import generate

TINY = SynthConfig(scale="tiny", seed=3)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "tiny"
    generate(TINY, root)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def tables(tiny_root: Path) -> dict[str, object]:
    return {
        "labels": read_csv(tiny_root / "labels.csv"),
        "clinical": read_csv(tiny_root / "clinical.csv"),
        "annotations": read_csv(tiny_root / "annotations.csv"),
        "reads": read_csv(tiny_root / "reads.csv"),
        "truth": json.loads((tiny_root / "ground_truth.json").read_text()),
    }
