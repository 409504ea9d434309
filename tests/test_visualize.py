"""Figures apart from statistics: the statistics modules never import matplotlib, nor choose its backend."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

STATISTICS = (
    "covidscan.evaluation.metrics",
    "covidscan.evaluation.curves",
    "covidscan.evaluation.bootstrap",
    "covidscan.evaluation.readers",
    "covidscan.evaluation.regression",
    "covidscan.explain.pca",
)


def test_the_statistics_modules_do_not_import_matplotlib():
    code = "import sys\n" + "".join(f"import {m}\n" for m in STATISTICS) + "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_only_the_entry_points_choose_the_backend():
    """``matplotlib.use("Agg")`` is called by the stage runner and the CLI, never at a library import."""
    callers = sorted(str(p.relative_to(ROOT)) for d in ("src", "pipelines", "bento") for p in (ROOT / d).rglob("*.py") if "matplotlib.use(" in p.read_text())
    assert callers == ["pipelines/__init__.py", "src/covidscan/cli.py"]
