"""The double-reading workflow: pairing and IoU, the automatic adjudication rule, the senior's queue,
the export (CSV/JSON + agreement report) and ingest reading the export into annotations.parquet."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from covidscan.annotate.workflow import BoxT, auto_adjudicate, compare, iou, pair_boxes, reads_kappa
from covidscan.config import DataConfig, SourceSpec
from covidscan.data import manifest as mf
from covidscan.data.annotation_export import AnnotationExportError
from covidscan.data.ingest import ingest
from tests.annotate.conftest import csrf_of, login
from tests.data.test_ingest import SALT


def test_iou_and_greedy_one_to_one_pairing():
    a = BoxT(0, 0, 0, 10, 10)
    assert iou(a, BoxT(0, 0, 0, 10, 10)) == 1.0
    assert iou(a, BoxT(0, 5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(a, BoxT(1, 0, 0, 10, 10)) == 0.0  # another slice
    first = [BoxT(0, 0, 0, 10, 10), BoxT(0, 20, 20, 30, 30)]
    second = [BoxT(0, 1, 1, 10, 10), BoxT(0, 0, 0, 9, 10), BoxT(0, 50, 50, 60, 60)]
    pairs, un1, un2 = pair_boxes(first, second, 0.5)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]  # IoU 0.9 beats 0.81; each box pairs once
    assert un1 == [1] and un2 == [0, 2]


def test_agreement_rule_and_auto_adjudication():
    first, second = [BoxT(2, 10, 10, 30, 30)], [BoxT(2, 12, 10, 32, 30)]
    cmp = compare(first, second, 1, 1)
    assert cmp.agreed and cmp.reasons == [] and cmp.mean_iou == pytest.approx(360 / 440)
    assert auto_adjudicate(first, second, cmp) == [BoxT(2, 11, 10, 31, 30)]
    assert compare(first, second, 1, 0).reasons == ["different_reads"]
    assert compare(first, [BoxT(2, 25, 25, 45, 45)], 1, 1).reasons == ["unpaired_box"]
    assert compare(first, second, 1, 1, threshold=0.9).reasons == ["unpaired_box"]
    assert compare([], [], 0, 0).agreed  # two readers who see no lesion agree
    with pytest.raises(ValueError):
        auto_adjudicate(first, second, compare(first, second, 1, 0))
    assert reads_kappa([1, 1, 0, 0], [1, 1, 0, 0]) == 1.0
    assert reads_kappa([1, 0, 1, 0], [1, 1, 0, 0]) == 0.0
    assert math.isnan(reads_kappa([1, 1], [1, 1]))


def _submit(client, rid, boxes, read):
    r = client.put(f"/api/cases/{rid}/annotation", json={"boxes": boxes, "read": read, "submit": True},
                   headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 200, r.text


def _box(x0, y0, x1, y1, s=0):
    return {"slice_index": s, "x0": x0, "y0": y0, "x1": x1, "y1": y1}


@pytest.fixture
def worked(platform):
    """Both readers read every case: the two X-rays agree (one with no lesion), the CT disagrees; the senior decides it."""
    clients = {}
    for name in ("ann1", "ann2", "senior", "admin"):
        clients[name] = TestClient(platform.app)
        assert login(clients[name], name).status_code == 303
    x1, x2 = platform.ids("xray")
    ct = platform.ids("ct_volume")[0]
    _submit(clients["ann1"], x1, [_box(2, 2, 12, 14)], 1)
    _submit(clients["ann2"], x1, [_box(3, 2, 13, 14)], 1)
    _submit(clients["ann1"], x2, [], 0)
    _submit(clients["ann2"], x2, [], 0)
    _submit(clients["ann1"], ct, [_box(1, 1, 8, 8, 1), _box(4, 4, 12, 12, 2)], 1)
    _submit(clients["ann2"], ct, [_box(1, 1, 8, 8, 1)], 0)
    senior = clients["senior"]
    queue = senior.get("/api/adjudication").json()["cases"]
    assert [c["record_id"] for c in queue] == [ct] and set(queue[0]["reasons"]) == {"unpaired_box", "different_reads"}
    both = senior.get(f"/api/cases/{ct}").json()
    assert len(both["reader1"]["boxes"]) == 2 and len(both["reader2"]["boxes"]) == 1 and both["reader2"]["read"] == 0
    assert senior.get(f"/api/cases/{x1}").json()["status"] == "agreed"
    r = senior.post(f"/api/cases/{x1}/adjudication", json={"boxes": [], "read": 0}, headers={"X-CSRF-Token": csrf_of(senior)})
    assert r.status_code == 409  # an agreed case is not the senior's to change
    r = senior.post(f"/api/cases/{ct}/adjudication", json={"boxes": [_box(1, 1, 8, 8, 1), _box(4, 4, 12, 12, 2)], "read": 1},
                    headers={"X-CSRF-Token": csrf_of(senior)})
    assert r.status_code == 200
    assert senior.get("/api/adjudication").json()["cases"] == []
    summary = clients["admin"].post("/api/admin/export", headers={"X-CSRF-Token": csrf_of(clients["admin"])}).json()
    return platform, summary, (x1, x2, ct)


def test_export_writes_what_ingest_reads_and_the_agreement_report(worked):
    platform, summary, (x1, x2, ct) = worked
    assert summary["n_cases"] == 3 and summary["n_agreed"] == 2 and summary["n_decided"] == 1
    assert summary["kappa"] == pytest.approx(0.4)  # reads (1,1), (0,0), (1,0)
    ann = pd.read_csv(platform.export_dir / "annotations.csv")
    adj = ann[(ann.record_id == x1) & (ann.reader == "adjudicated")]
    assert adj[["x0", "y0", "x1", "y1"]].values.tolist() == [[2.5, 2.0, 12.5, 14.0]]  # the mean of the pair
    assert sorted(ann[ann.record_id == ct].reader) == ["adjudicated", "adjudicated", "reader1", "reader1", "reader2"]
    reads = pd.read_csv(platform.export_dir / "reads.csv")
    assert set(zip(reads.record_id, reads.reader, reads.read)) >= {(ct, "Rad-5th", 1), (ct, "Rad-3rd", 0)} and len(reads) == 6
    agreement = pd.read_csv(platform.export_dir / "agreement.csv").set_index("record_id")
    assert agreement.loc[ct, "status"] == "decided" and agreement.loc[ct, "unpaired_reader1"] == 1
    assert agreement.loc[x1, "mean_iou"] == pytest.approx(round(108 / 132, 4))
    cases = json.loads((platform.export_dir / "annotations.json").read_text())["cases"]
    assert {c["record_id"]: c["reads"]["adjudicated"] for c in cases} == {x1: 1, x2: 0, ct: 1}


def test_ingest_merges_the_export_by_record_id(worked, ingest_dir, tmp_path):
    platform, _, (x1, x2, ct) = worked
    spec = SourceSpec(name="hosp", adapter="hospital", location=str(ingest_dir.parent / "export"))
    before = pd.read_parquet(ingest_dir / mf.ANNOTATIONS_FILE)
    assert len(before[before.record_id == x1]) == 2  # the source's hand-written annotations.csv rows
    out = tmp_path / "ingest"
    summary = ingest([spec], DataConfig(sources=[spec], annotations=str(platform.export_dir)), out, salt=SALT, progress=False)
    assert summary.annotations == {"cases": 3, "boxes": 8, "reads": 6, "unknown_record_ids": 0}
    after = pd.read_parquet(out / mf.ANNOTATIONS_FILE)
    exported = pd.read_csv(platform.export_dir / "annotations.csv")
    cols = ["record_id", "reader", "slice_index", "x0", "y0", "x1", "y1"]
    assert after[cols].sort_values(cols).values.tolist() == exported[cols].sort_values(cols).values.tolist()
    reads = pd.read_parquet(out / mf.READS_FILE)
    assert set(zip(reads.record_id, reads.reader, reads.read)) >= {(ct, "Rad-5th", 1), (ct, "Rad-3rd", 0)}
    assert json.loads((out / "report.json").read_text())["annotations"]["cases"] == 3
    with pytest.raises(AnnotationExportError, match="another ingest"):
        ingest([spec], DataConfig(sources=[spec], annotations=str(platform.export_dir)), tmp_path / "other", salt=b"another-salt-0123456789abcdefXYZ",
               progress=False)
