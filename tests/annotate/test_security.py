"""Security of the annotation platform on the real app and store: lock-out, roles, CSRF, ids that are
paths, the readers' blindness to each other, and sentinel PHI in pages, API responses and the log."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient
from sqlalchemy import select

from covidscan.annotate.store import AuditEntry, open_store
from tests.annotate.conftest import PASSWORD, csrf_of, login
from tests.data.test_ingest import ALL_SENTINELS


def client_for(platform, username: str | None = None) -> TestClient:
    c = TestClient(platform.app)
    if username:
        assert login(c, username).status_code == 303
    return c


def test_wrong_password_repeatedly_locks_the_account(platform):
    c = client_for(platform)
    codes = [login(c, "ann1", "wrong password!").status_code for _ in range(3)]
    assert codes == [401, 401, 429]  # max_failures=3 in the fixture
    # now even the right password is refused while locked
    r = login(c, "ann1", PASSWORD)
    assert r.status_code == 429 and "locked" in r.text
    # the other accounts are not affected
    assert login(client_for(platform), "ann2").status_code == 303
    with open_store(platform.db_url)() as db:
        actions = [e.action for e in db.scalars(select(AuditEntry).where(AuditEntry.username == "ann1"))]
    assert actions.count("login_failed") == 3 and "login_refused_locked" in actions


def test_a_cookie_copied_before_logout_stops_working(platform):
    c = client_for(platform, "ann1")
    stolen = dict(c.cookies)
    assert c.get("/api/me").status_code == 200
    assert c.post("/logout", data={"csrf_token": csrf_of(c)}, follow_redirects=False).status_code == 303
    replay = TestClient(platform.app, cookies=stolen)
    assert replay.get("/api/me").status_code == 401


def test_unknown_user_and_wrong_password_get_the_same_answer(platform):
    c = client_for(platform)
    a, b = login(c, "nobody", "whatever12345"), login(c, "ann2", "whatever12345")
    assert a.status_code == b.status_code == 401
    assert "wrong user name or password" in a.text and "wrong user name or password" in b.text


def test_login_and_changes_without_csrf_token_are_refused(platform):
    c = client_for(platform)
    r = c.post("/login", data={"username": "ann1", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    c = client_for(platform, "ann1")
    rid = platform.ids("xray")[0]
    body = {"boxes": [{"slice_index": 0, "x0": 1, "y0": 1, "x1": 9, "y1": 9}], "read": 1}
    assert c.put(f"/api/cases/{rid}/annotation", json=body).status_code == 403
    assert c.put(f"/api/cases/{rid}/annotation", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert c.put(f"/api/cases/{rid}/annotation", json=body, headers={"X-CSRF-Token": csrf_of(c)}).status_code == 200
    assert c.get(f"/api/cases/{rid}").json()["boxes"][0]["x1"] == 9


def test_roles_reader_cannot_reach_admin_or_senior_routes(platform):
    c = client_for(platform, "ann1")
    token = csrf_of(c)
    assert c.get("/api/admin/users").status_code == 403
    assert c.get("/api/admin/audit").status_code == 403
    assert c.post("/api/admin/export", headers={"X-CSRF-Token": token}).status_code == 403
    assert c.post("/api/admin/users", headers={"X-CSRF-Token": token},
                  json={"username": "evil", "password": "x" * 12, "role": "admin"}).status_code == 403
    assert c.get("/api/adjudication").status_code == 403
    rid = platform.ids("xray")[0]
    assert c.post(f"/api/cases/{rid}/adjudication", headers={"X-CSRF-Token": token}, json={"boxes": [], "read": 1}).status_code == 403
    anonymous = client_for(platform)
    assert anonymous.get("/api/worklist").status_code == 401
    assert anonymous.get(f"/api/cases/{rid}/image").status_code == 401
    admin = client_for(platform, "admin")
    assert admin.get("/api/admin/users").status_code == 200
    assert admin.get(f"/api/cases/{rid}").status_code == 403  # an admin does not read cases


def test_reader_cannot_see_the_other_readers_boxes_before_adjudication(platform):
    rid = platform.ids("xray")[0]
    r1, r2 = client_for(platform, "ann1"), client_for(platform, "ann2")
    box = {"slice_index": 0, "x0": 2, "y0": 3, "x1": 12, "y1": 14}
    assert r1.put(f"/api/cases/{rid}/annotation", json={"boxes": [box], "read": 1, "submit": True},
                  headers={"X-CSRF-Token": csrf_of(r1)}).json() == {"status": "submitted"}
    seen = r2.get(f"/api/cases/{rid}").json()
    assert seen["boxes"] == [] and seen["read"] is None and seen["status"] == "new"
    assert "reader1" not in seen and "12.0" not in r2.get(f"/api/cases/{rid}").text
    assert r2.get("/api/worklist").json()["cases"][0]["status"] in ("new",)
    # a submitted case is final for its reader
    assert r1.put(f"/api/cases/{rid}/annotation", json={"boxes": [], "read": 0},
                  headers={"X-CSRF-Token": csrf_of(r1)}).status_code == 409
    # the senior sees nothing until both readers submitted
    assert client_for(platform, "senior").get(f"/api/cases/{rid}").status_code == 409


BAD_IDS = ("..%2F..%2Fmanifest.parquet", "r-..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "arrays%2F00%2Fx.npy", "r-0000000000000000",
           "r-ABCDEF0123456789", "manifest.parquet", "r-0123456789abcdef%00")


def test_an_image_id_with_a_path_or_traversal_is_not_found(platform):
    c = client_for(platform, "ann1")
    for bad in BAD_IDS:
        for url in (f"/api/cases/{bad}/image", f"/api/cases/{bad}", f"/case/{bad}"):
            assert c.get(url).status_code == 404, url
    r = c.get(f"/api/cases/{platform.ids('xray')[0]}/image?slice=3")
    assert r.status_code == 404  # an X-ray has one slice


def test_images_render_for_every_window_and_colour(platform):
    c = client_for(platform, "ann1")
    ct = platform.ids("ct_volume")[0]
    pngs = {}
    for window in ("lung", "mediastinum", "preprocessing"):
        for colour in (0, 1):
            r = c.get(f"/api/cases/{ct}/image?slice=2&window={window}&colour={colour}")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
            pngs[window, colour] = r.content
    assert len(set(pngs.values())) == len(pngs)  # the presets and the toggle change the image
    assert c.get(f"/api/cases/{ct}/image?slice=4").status_code == 404  # 4 slices: 0..3


def test_sentinel_phi_never_reaches_pages_api_responses_or_the_log(platform, caplog):
    caplog.set_level(logging.DEBUG)
    texts = []
    xr, ct = platform.ids("xray")[0], platform.ids("ct_volume")[0]
    r1, r2, senior, admin = (client_for(platform, u) for u in ("ann1", "ann2", "senior", "admin"))
    for c, box in ((r1, {"slice_index": 1, "x0": 1, "y0": 1, "x1": 8, "y1": 8}), (r2, {"slice_index": 1, "x0": 1, "y0": 1, "x1": 8, "y1": 9})):
        texts.append(c.put(f"/api/cases/{ct}/annotation", json={"boxes": [box], "read": 1 if c is r1 else 0, "submit": True},
                           headers={"X-CSRF-Token": csrf_of(c)}).text)
    for c in (r1, r2):
        for url in ("/", "/login", "/api/worklist", f"/case/{xr}", f"/case/{ct}", f"/api/cases/{xr}", f"/api/cases/{ct}",
                    f"/api/cases/{xr}/image", f"/api/cases/{ct}/image?slice=1&colour=1", "/static/annotate.js"):
            r = c.get(url)
            texts.append(r.text if "image" not in r.headers.get("content-type", "") else r.content.decode("latin-1"))
            texts.append(str(dict(r.headers)))
    texts += [senior.get(u).text for u in ("/", "/api/adjudication", f"/case/{ct}", f"/api/cases/{ct}")]
    texts.append(senior.post(f"/api/cases/{ct}/adjudication", json={"boxes": [], "read": 1}, headers={"X-CSRF-Token": csrf_of(senior)}).text)
    texts += [admin.get(u).text for u in ("/", "/api/admin/users", "/api/admin/audit")]
    texts.append(admin.post("/api/admin/export", headers={"X-CSRF-Token": csrf_of(admin)}).text)
    texts += [p.read_text() for p in platform.export_dir.iterdir()]
    assert ct in texts[-1] or any(ct in t for t in texts)  # the test reached real content
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "adjudicated case" in logs  # the app's log lines were captured
    hits = [(i, s) for i, t in enumerate([*texts, logs]) for s in ALL_SENTINELS if s in t]
    assert hits == []
    # the label is not shown to readers (they read blind)
    assert "covid19" not in r1.get(f"/api/cases/{xr}").text and "covid19" not in r1.get("/api/worklist").text
