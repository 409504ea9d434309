"""Model-assisted pre-annotation with a tiny real classifier (a serving bundle of the tests' tiny
CNNCF): suggested boxes from its Grad-CAM/DBSCAN centres, never saved unless accepted, and the
worklist ordered by its uncertainty."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from covidscan.annotate.app import Settings, create_app
from covidscan.annotate.store import Box, open_store
from covidscan.annotate.suggest import from_bundle
from covidscan.models.zoo import save_model
from covidscan.serving.bundle import write_bundle
from tests.annotate.conftest import csrf_of, login
from tests.serving import tiny_models as tm


def test_suggestions_are_offered_saved_only_when_accepted_and_order_the_worklist(platform, tmp_path):
    save_model(tm.build("xray", seed=1), tmp_path / "xray.pt")  # a seed whose Grad-CAM has a cluster (an untrained net may have none)
    write_bundle(tmp_path / "xray.pt", tmp_path / "bundle", role="xray", name=tm.NAMES["xray"], version="1", alias="champion",
                 preprocess=tm.TINY_PRE)
    suggester = from_bundle(tmp_path / "bundle")
    app = create_app(platform.library, open_store(platform.db_url), Settings(secret="s" * 40, export_dir=tmp_path / "export", suggester=suggester))
    c = TestClient(app)
    assert login(c, "ann1").status_code == 303
    xray, ct = platform.ids("xray")[0], platform.ids("ct_volume")[0]
    case = c.get(f"/api/cases/{xray}").json()
    suggestions = case["suggestions"]
    assert suggestions and all(0 <= b["x0"] < b["x1"] <= 20 and 0 <= b["y0"] < b["y1"] <= 24 for b in suggestions)
    assert c.get(f"/api/cases/{ct}").json()["suggestions"] == []  # an X-ray model suggests nothing on a CT volume
    token = csrf_of(c)
    # saved without accepting: nothing of the suggestions is stored
    assert c.put(f"/api/cases/{xray}/annotation", json={"boxes": [], "read": 1}, headers={"X-CSRF-Token": token}).status_code == 200
    assert c.get(f"/api/cases/{xray}").json()["boxes"] == []
    # accepted: they become the reader's boxes, flagged as coming from a suggestion
    accepted = [{**b, "suggested": True} for b in suggestions]
    assert c.put(f"/api/cases/{xray}/annotation", json={"boxes": accepted, "read": 1}, headers={"X-CSRF-Token": token}).status_code == 200
    with open_store(platform.db_url)() as db:
        assert [b.from_suggestion for b in db.scalars(select(Box).where(Box.record_id == xray))] == [1] * len(suggestions)
    rows = c.get("/api/worklist?order=uncertainty").json()["cases"]
    assert [r["kind"] for r in rows][-1] == "ct_volume" and rows[-1]["uncertainty"] == -1.0
    assert all(0 <= r["uncertainty"] <= 1 for r in rows[:-1])
    assert rows[0]["uncertainty"] >= rows[1]["uncertainty"]
