"""The DVC plots page offline: a fake DVC project with the evaluate stage's plots (the CSVs written by
the evaluate stage's own writer), `dvc plots show` through the offline template, and headless Chromium
with the network off.

Needs the pinned vega libraries in vendor/vega (`make plots-vendor`) and, for the browser test, a
Chromium (`apt-get install chromium`); each test skips with that message when they are absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from covidscan.evaluation import plots_page
from covidscan.evaluation.curves import grid_curve
from covidscan.evaluation.report import write_curve_csv
from tests.conftest import ROOT

VENDOR = ROOT / "vendor" / "vega"
EXPERIMENTS = ("A", "B")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


@pytest.fixture
def vendor() -> Path:
    if plots_page.missing(VENDOR):
        pytest.skip(f"{VENDOR}: the pinned vega libraries are not fetched (run `make plots-vendor`)")
    return VENDOR


@pytest.fixture
def project(tmp_path) -> Path:
    """A DVC project whose evaluate stage declares its plots exactly as the real dvc.yaml does."""
    repo = tmp_path / "project"
    repo.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True, env=env)
    real = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stage = {"foreach": {e: {"exp": e} for e in EXPERIMENTS}, "do": {"cmd": "true", "plots": real["stages"]["evaluate"]["do"]["plots"]}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"vars": real["vars"], "stages": {"evaluate": stage}}))  # the plots name ${paths.reports}
    rng = np.random.default_rng(0)
    for exp in EXPERIMENTS:
        y = rng.integers(0, 2, 200)
        curve = grid_curve(y, np.clip(0.35 * y + rng.random(200) * 0.65, 0, 1))
        write_curve_csv(curve, "roc", repo / f"reports/evaluate/{exp}/roc.csv")
        write_curve_csv(curve, "pr", repo / f"reports/evaluate/{exp}/pr.csv")
    return repo


def test_template_names_the_libraries_it_lacks(tmp_path):
    with pytest.raises(plots_page.PlotsPageError, match=r"vega@5\.20\.2, vega-lite@5\.2\.0, vega-embed@6\.18\.2 not fetched"):
        plots_page.write_template(tmp_path)


def test_the_page_inlines_the_pinned_libraries_and_loads_no_script(vendor, project, tmp_path):
    template = plots_page.write_template(vendor, tmp_path / "template.html")
    page = plots_page.show(Path("dvc_plots"), template, cwd=project).read_text(encoding="utf-8")
    assert re.search(r"<script[^>]*\bsrc\s*=", page) is None
    assert "cdn.jsdelivr" not in page
    for lib in plots_page.VEGA_LIBRARIES:
        assert (vendor / lib.file_name).read_text(encoding="utf-8") in page
    assert page.count("vegaEmbed(") == 2 * len(EXPERIMENTS)  # a roc and a pr plot per experiment


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium (apt-get install chromium)")


def _offline(cmd: list[str]) -> list[str]:
    """The command in a network namespace of its own (no network at all) when this user may make one;
    else Chromium's own switches that send every host name and proxy nowhere."""
    blocked = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", *cmd, *blocked]
    return [*cmd, *blocked]


def _render(page: Path, out: Path) -> tuple[int, np.ndarray]:
    """(canvases vega drew, the screenshot as an RGB array) of ``page`` in headless Chromium, offline."""
    from PIL import Image

    base = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=15000",
            "--window-size=1000,1600"]  # fmt: skip
    dom = subprocess.run(_offline([*base, "--dump-dom", page.as_uri()]), capture_output=True, text=True, timeout=120).stdout
    subprocess.run(_offline([*base, f"--screenshot={out}", page.as_uri()]), capture_output=True, timeout=120)
    return dom.count("<canvas"), np.asarray(Image.open(out).convert("RGB")).astype(int)


def _curves(shot: np.ndarray) -> int:
    """Drawn curves: connected runs of coloured pixels (axes, grid and text are grey or black) long
    enough to be a line, not a legend swatch."""
    from scipy import ndimage

    coloured = (shot.max(axis=2) - shot.min(axis=2)) > 60
    labels, n = ndimage.label(ndimage.binary_dilation(coloured, iterations=2))
    sizes = ndimage.sum(coloured, labels, range(1, n + 1)) if n else np.zeros(0)
    return int((sizes > 200).sum())


def test_headless_chromium_offline_draws_every_roc_and_pr_curve(vendor, project, tmp_path):
    template = plots_page.write_template(vendor, tmp_path / "template.html")
    page = plots_page.show(Path("dvc_plots"), template, cwd=project)
    canvases, shot = _render(page, tmp_path / "offline.png")
    assert canvases == 2 * len(EXPERIMENTS)
    assert _curves(shot) == 2 * len(EXPERIMENTS)
    # dvc's own page (CDN scripts) stays blank here: the network really is off for the browser
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc), "plots", "show", "-o", "cdn"], cwd=project, check=True, capture_output=True)
    canvases, shot = _render(project / "cdn" / "index.html", tmp_path / "cdn.png")
    assert canvases == 0 and _curves(shot) == 0
