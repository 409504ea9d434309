"""The annotation platform in a real browser, end to end, then a real `dvc repro` of ingest.

Headless Chromium from Debian's packages (never a downloaded browser), driven by Playwright, against
the app served by uvicorn on 127.0.0.1 over the project's tiny synthetic dataset, in a copy of the
project (a fresh git repository):

1. reader 1 and reader 2 log in through the form and draw boxes with mouse events on an X-ray and on a
   CT slice (keyboard slice scrolling, window preset and pseudo-colour toggles, zoom), record their
   COVID-19 reads and submit; the X-ray agrees (adjudicated by the rule), the CT does not (queued);
2. the senior adjudicates the CT in the browser; the admin exports from the browser;
3. the export is `dvc add`-ed, ``data.annotations`` names it, and `dvc repro -s ingest` writes the
   platform's boxes and reads into annotations.parquet and reads.parquet.

The screenshot of the annotation screen is written to the test's folder, and to
docs/images/annotation.png when that file is absent or COVIDSCAN_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time

import pandas as pd
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
BROWSERS = ("chromium", "chromium-browser")
SCREENSHOT = ROOT / "docs" / "images" / "annotation.png"


def _chromium() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium (apt-get install chromium; make test installs it when it can)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """A copy of the project on the tiny profile with the synthetic set ingested, and the platform
    serving it on 127.0.0.1 (uvicorn in a thread)."""
    import uvicorn

    from covidscan.annotate.app import Settings, create_app
    from covidscan.annotate.auth import create_user
    from covidscan.annotate.cases import CaseLibrary
    from covidscan.annotate.store import default_url, open_store
    from covidscan.config import SynthConfig, load_params
    from covidscan.data.ingest import ingest
    from covidscan.data.synth import generate
    from tests.annotate.conftest import PASSWORD, USERS
    from tests.pipeline.conftest import copy_project

    repo, env = copy_project(tmp_path / "project", "tiny")
    params = load_params(repo / "params.yaml")
    generate(SynthConfig(scale="tiny", seed=params.synth.seed), repo / "data/raw/synthetic")  # what stage synth writes
    cwd = os.getcwd()
    os.chdir(repo)  # the sources' locations are relative to the project
    try:
        ingest(params.data.sources, params.data, repo / "data/interim/ingest", salt=env["COVIDSCAN_SALT"].encode(), progress=False)
    finally:
        os.chdir(cwd)
    sessions = open_store(default_url(tmp_path / "annotate.db"))
    with sessions() as db:
        for name, (role, slot, reads_as) in USERS.items():
            create_user(db, name, PASSWORD, role, slot, reads_as)
    library = CaseLibrary(repo / "data/interim/ingest", params.preprocess)
    settings = Settings(secret="browser-test-secret-" + "0" * 32, export_dir=repo / "data/raw/annotations")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(library, sessions, settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", repo, env, library
    server.should_exit = True
    thread.join(10)


def _login(page, base: str, name: str) -> None:
    from tests.annotate.conftest import PASSWORD

    page.goto(base + "/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_url(base + "/")


def _open_case(page, base: str, record_id: str) -> None:
    page.wait_for_selector(f'tr[data-record="{record_id}"] a')  # it is on the worklist
    page.click(f'tr[data-record="{record_id}"] a')
    page.wait_for_selector('#app[data-ready="1"]')
    page.wait_for_selector("#canvas[data-loaded]")  # (selectors, not JS: the app's CSP forbids eval)


def _draw(page, box: tuple[float, float, float, float], side: int) -> None:
    """Drag with the mouse from (x0, y0) to (x1, y1), in image pixels of a ``side`` x ``side`` image fitted to the canvas."""
    r = page.locator("#canvas").bounding_box()
    k = 640 / side
    page.mouse.move(r["x"] + 1 + box[0] * k, r["y"] + 1 + box[1] * k)
    page.mouse.down()
    page.mouse.move(r["x"] + 1 + box[2] * k, r["y"] + 1 + box[3] * k, steps=6)
    page.mouse.up()


def _approx(boxes: list[dict], expected: list[tuple]) -> bool:
    got = sorted((b["slice_index"], b["x0"], b["y0"], b["x1"], b["y1"]) for b in boxes)
    return len(got) == len(expected) and all(abs(a - b) <= 0.6 for g, e in zip(got, sorted(expected)) for a, b in zip(g, e))


def test_readers_senior_and_admin_in_a_real_browser_then_dvc_repro_ingests_the_export(served, tmp_path):
    from playwright.sync_api import sync_playwright

    from covidscan.config import load_params, write_effective
    from covidscan.data import manifest as mf
    from tests.pipeline.conftest import run

    base, repo, env, library = served
    m = library.manifest
    xray = m[m.kind == "xray"].record_id.iloc[0]
    ct_row = m[m.kind == "ct_volume"].iloc[0]
    ct, side = ct_row.record_id, int(ct_row.cols)
    assert int(m[m.kind == "xray"].cols.iloc[0]) == side == 64
    xray_boxes = {"ann1": (20, 20, 40, 36), "ann2": (21, 20, 41, 36)}  # IoU 0.9: agreed
    ct_boxes = {"ann1": (10, 12, 26, 28), "ann2": (40, 30, 56, 46)}  # no overlap, other reads: queued
    chromium = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        errors: list[str] = []
        for name in ("ann1", "ann2"):
            page = browser.new_context(viewport={"width": 1100, "height": 780}).new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            _login(page, base, name)
            _open_case(page, base, xray)
            _draw(page, xray_boxes[name], side)
            page.keyboard.press("y") if name == "ann1" else page.click("#read-yes")
            page.click("#submit")
            page.wait_for_selector("#status:has-text('submitted')")
            page.goto(base + "/")
            _open_case(page, base, ct)
            page.locator("#canvas").focus()
            for _ in range(3):
                page.keyboard.press("ArrowDown")  # slice scrolling
            assert page.inner_text("#slice-label").startswith("4/")
            page.keyboard.press("w")  # lung -> mediastinum
            page.wait_for_selector('#canvas[data-loaded*="window=mediastinum"]')
            page.keyboard.press("c")  # pseudo-colour on
            page.wait_for_selector('#canvas[data-loaded*="colour=1"]')
            page.keyboard.press("+")
            page.keyboard.press("0")  # zoom in, then fit again
            _draw(page, ct_boxes[name], side)
            assert page.inner_text("#n-boxes") == "1"
            if name == "ann2":
                page.keyboard.press("c")
                page.keyboard.press("w")  # mediastinum -> preprocessing
                page.keyboard.press("w")  # -> lung, grey: the screenshot's view
                page.wait_for_selector('#canvas[data-loaded$="window=lung&colour=0"]')
                shot = tmp_path / "annotation.png"
                page.screenshot(path=str(shot))
                if not SCREENSHOT.exists() or os.environ.get("COVIDSCAN_UPDATE_SCREENSHOT") == "1":
                    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(shot, SCREENSHOT)
            page.keyboard.press("y" if name == "ann1" else "n")
            page.click("#submit")
            page.wait_for_selector("#status:has-text('submitted')")
            page.context.close()
        senior = browser.new_context(viewport={"width": 1100, "height": 780}).new_page()
        senior.on("pageerror", lambda e: errors.append(str(e)))
        _login(senior, base, "senior")
        senior.wait_for_selector("#cases tbody tr")
        assert senior.locator("#cases tbody tr").count() == 1  # only the CT disagreement is queued
        _open_case(senior, base, ct)
        assert "different_reads" in senior.inner_text("#reasons")
        senior.click("#copy-r1")
        senior.click("#read-yes")
        senior.click("#decide")
        senior.wait_for_selector("#status:has-text('adjudicated')")
        admin = browser.new_context().new_page()
        _login(admin, base, "admin")
        admin.click("#export")
        admin.wait_for_selector("#export-result:has-text('n_cases')")
        assert '"n_cases": 2' in admin.inner_text("#export-result")
        browser.close()
    assert errors == []

    exported = pd.read_csv(repo / "data/raw/annotations/annotations.csv")
    got = {(r.record_id, r.reader): r for r in exported.itertuples()}
    assert _approx([dict(slice_index=r.slice_index, x0=r.x0, y0=r.y0, x1=r.x1, y1=r.y1) for r in exported.itertuples()
                    if r.record_id == xray and r.reader == "reader1"], [(0, *xray_boxes["ann1"])])
    assert _approx([dict(slice_index=r.slice_index, x0=r.x0, y0=r.y0, x1=r.x1, y1=r.y1) for r in exported.itertuples()
                    if r.record_id == ct and r.reader == "adjudicated"], [(3, *ct_boxes["ann1"])])
    assert (xray, "adjudicated") in got

    # the team's export reaches the pipeline: DVC-tracked, named by data.annotations, ingested by `dvc repro`
    run(["dvc", "add", "-q", "data/raw/annotations"], repo, env)
    params_file = repo / "params.yaml"
    params_file.write_text(re.sub(r"(?m)^(  deid:\n)", "  annotations: data/raw/annotations\n\\1", params_file.read_text(), count=1))
    write_effective(load_params(params_file), repo / "build/params", stages=["ingest"])  # what stage configure writes
    run(["dvc", "repro", "-s", "ingest"], repo, env)
    ann = pd.read_parquet(repo / "data/interim/ingest" / mf.ANNOTATIONS_FILE)
    mine = ann[ann.record_id.isin([xray, ct])].sort_values(["record_id", "reader", "x0"])
    exp = exported.sort_values(["record_id", "reader", "x0"])
    assert mine[["record_id", "reader", "slice_index", "x0", "y0", "x1", "y1"]].values.tolist() == \
        exp[["record_id", "reader", "slice_index", "x0", "y0", "x1", "y1"]].values.tolist()
    reads = pd.read_parquet(repo / "data/interim/ingest" / mf.READS_FILE)
    assert {(ct, "Rad-5th", 1), (ct, "Rad-3rd", 0), (xray, "Rad-5th", 1), (xray, "Rad-3rd", 1)} <= set(zip(reads.record_id, reads.reader, reads.read))
