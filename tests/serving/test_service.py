"""A real `bentoml serve` of the covidscan services on 127.0.0.1 with tiny registered models.

Predictions over HTTP equal the package's own predictor for the same files; a corpus of hostile uploads
each gets its 4xx JSON error while the service keeps answering; no identifying header value reaches a
response or the service log.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from covidscan.config import DicomLimits, ServeConfig
from covidscan.serving.predictor import Predictor
from tests.data import dicom_factory as fx
from tests.data.test_dicom_malformed import CASES as MALFORMED, LIMITS as DEFAULT_LIMITS
from tests.serving import server as srv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = srv.start(tmp_path_factory.mktemp("serve"))
    yield s
    srv.stop(s)


@pytest.fixture(scope="module")
def predictor(served):
    cfg = json.loads((served.tmp / "serving.json").read_text())
    return Predictor(served.bundles(), ServeConfig.model_validate(cfg["serve"]), DicomLimits.model_validate(cfg["limits"]), device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Synthetic uploads: X-rays (CR, DX, MONOCHROME1, PNG, JPEG), a CT series, its zip and .npy."""
    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(3)
    out = {
        "cr": fx.save(fx.xray(fx.ramp(48, 40)), d / "cr.dcm"),
        "dx_mono1": fx.save(fx.xray(rng.integers(0, 4000, (40, 44)), modality="DX", photometric="MONOCHROME1"), d / "dx.dcm"),
        "cr_rle": fx.save(fx.xray(fx.ramp(36, 52, hi=3000)), d / "rle.dcm", "1.2.840.10008.1.2.5"),
    }
    grey = (rng.random((50, 46)) * 255).astype(np.uint8)
    cv2.imwrite(str(d / "x.png"), grey)
    cv2.imwrite(str(d / "x.jpg"), grey)
    out["png"], out["jpeg"] = d / "x.png", d / "x.jpg"
    series = d / "series"
    series.mkdir()
    vol = fx.volume(7, 24, 20)
    out["slices"] = fx.write_series(series, vol, spacing_z=2.5)
    buf = d / "series.zip"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, p in enumerate(out["slices"]):
            zf.write(p, f"study/series/{i:03d}.dcm")
    out["zip"] = buf
    np.save(d / "vol.npy", vol.astype(np.int16))
    out["npy"] = d / "vol.npy"
    out["ct_slice_dicom"] = fx.save(fx.ct_slice(fx.ramp(30, 28, lo=-1100, hi=300)), d / "ct_slice.dcm")  # one single-frame CT
    crop = (fx.ramp(24, 20) % 256).astype(np.uint8)
    cv2.imwrite(str(d / "crop1.png"), crop)
    cv2.imwrite(str(d / "crop2.png"), 255 - crop)
    out["crops"] = [d / "crop1.png", d / "crop2.png"]
    return out


def post(served, route: str, files: list[tuple[str, Path]], data: dict | None = None) -> requests.Response:
    handles = [(field, (Path(p).name, Path(p).read_bytes())) for field, p in files]
    return requests.post(f"{served.url}/{route}", files=handles, data=data or {}, timeout=120)


def probs(body: dict) -> np.ndarray:
    return np.array(list(body["probabilities"].values()))


# --------------------------------------------------------------------------- predictions
@pytest.mark.parametrize("key", ["cr", "dx_mono1", "cr_rle", "png", "jpeg"])
def test_xray_matches_the_package_predictor(served, predictor, files, key):
    r = post(served, "xray", [("file", files[key])])
    assert r.status_code == 200, r.text
    body = r.json()
    own = predictor.predict_xray(files[key])
    np.testing.assert_allclose(probs(body), probs(own), rtol=0, atol=1e-5)
    assert body["model"] == own["model"] and body["model"]["version"] == "1" and body["model"]["name"] == "covidscan-student-xray"
    assert body["threshold"] == own["threshold"] and body["notice"].startswith("For research use only")
    assert set(body) == {"probabilities", "positive_class", "score", "threshold", "call", "model", "notice"}


@pytest.mark.parametrize("form", ["slices", "zip", "npy"])
def test_ct_matches_the_package_predictor(served, predictor, files, form):
    uploads = files["slices"] if form == "slices" else [files[form]]
    data = {"spacing_mm": "2.5"} if form == "npy" else {}
    r = post(served, "ct", [("files", p) for p in uploads], data)
    assert r.status_code == 200, r.text
    body = r.json()
    own = predictor.predict_ct(uploads, spacing_mm=2.5 if form == "npy" else None)
    assert set(body["results"]) == {"ct2d", "ct3d"}
    for role in ("ct2d", "ct3d"):
        np.testing.assert_allclose(probs(body["results"][role]), probs(own["results"][role]), rtol=0, atol=1e-5)
        assert body["results"][role]["model"]["version"] == "1"


@pytest.mark.parametrize("key", ["png", "jpeg", "ct_slice_dicom"])
def test_one_ct_slice_reaches_the_slice_model(served, predictor, files, key):
    """A PNG/JPEG slice or a single-frame CT DICOM posted to /ct: the CT-slice model answers (alone)."""
    r = post(served, "ct", [("files", files[key])])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["results"]) == {"ctslice"}
    result = body["results"]["ctslice"]
    assert result["model"]["name"] == "covidscan-student-ct-slice" and result["model"]["version"] == "1"
    np.testing.assert_allclose(probs(result), probs(predictor.predict_ct([files[key]])["results"]["ctslice"]), rtol=0, atol=1e-5)


def test_ct_zip_slices_and_npy_agree(served, files):
    bodies = [post(served, "ct", [("files", p) for p in files["slices"]]).json(), post(served, "ct", [("files", files["zip"])]).json(),
              post(served, "ct", [("files", files["npy"])], {"spacing_mm": "2.5"}).json()]  # fmt: skip
    for b in bodies[1:]:
        np.testing.assert_allclose(probs(b["results"]["ct3d"]), probs(bodies[0]["results"]["ct3d"]), atol=1e-5)


def test_indicators_and_explain(served, predictor, files):
    r = post(served, "indicators", [("crops", p) for p in files["crops"]])
    assert r.status_code == 200, r.text
    own = predictor.indicators(files["crops"])
    assert r.json()["n_crops"] == 2 and set(r.json()["raw_units"]) == {"wbc", "neutrophil_pct", "lymphocyte_pct", "procalcitonin", "crp"}
    np.testing.assert_allclose(list(r.json()["normalised"].values()), list(own["normalised"].values()), atol=1e-5)
    np.testing.assert_allclose(list(r.json()["raw_units"].values()), list(own["raw_units"].values()), rtol=1e-4)
    r = post(served, "explain", [("files", files["cr"])], {"model": "xray"})
    assert r.status_code == 200, r.text
    body = r.json()
    import base64

    png = base64.b64decode(body["overlay_png_base64"])
    assert png.startswith(b"\x89PNG") and cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (32, 32, 3)
    assert all(0 <= c["x"] < 1 and 0 <= c["y"] < 1 for c in body["centres"])
    own = predictor.explain([files["cr"]])
    assert len(body["centres"]) == len(own["centres"])
    r = post(served, "explain", [("files", p) for p in files["slices"]], {"model": "ct3d"})
    assert r.status_code == 200 and all(set(c) == {"z", "y", "x"} for c in r.json()["centres"])


def test_health_ready_metrics(served, files):
    assert requests.get(f"{served.url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{served.url}/readyz", timeout=10).status_code == 200
    post(served, "xray", [("file", files["cr"])])
    metrics = requests.get(f"{served.url}/metrics", timeout=10).text
    assert "bentoml_service_request_total" in metrics or "request_total" in metrics
    info = requests.post(f"{served.url}/info", json={}, timeout=10).json()
    assert info["models"]["xray"]["version"] == "1" and "notice" in info
    assert info["models"]["ctslice"]["input_kind"] == "ct_slice2d" and info["not_served"] == {}


# ------------------------------------------------------------------------------ hostile corpus
def _raw(served, payload: bytes, *, pause_after: int | None = None, wait_s: float = 0.0) -> tuple[int, dict]:
    """Send raw bytes (optionally stalling after ``pause_after`` bytes); return (status, JSON body)."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            if pause_after is None:
                sock.sendall(payload)
            else:
                sock.sendall(payload[:pause_after])
                time.sleep(wait_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
                if length and len(rest) >= length[0]:
                    break
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest or b"{}")


def _multipart(route: str, field: str, name: str, content: bytes, declared: int | None = None) -> bytes:
    boundary = "covidscanboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    head = (f"POST /{route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {declared if declared is not None else len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    return head + body


def _zip(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _png_header_bomb() -> bytes:
    """A PNG whose header declares 60000 x 60000 pixels (decoding would need GBs)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 64


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _hostile_cases(tmp: Path) -> list[tuple[str, str, list[tuple[str, str, bytes]], dict]]:
    """(id, route, [(field, filename, bytes)], form data) for uploads sent with requests."""
    cases = []
    for name, builder, _, _, limits in MALFORMED:
        if limits is not DEFAULT_LIMITS:
            continue
        folder = tmp / name
        folder.mkdir()
        cases.append((f"dicom-{name}", "xray", [("file", "bad.dcm", builder(folder).read_bytes())], {}))
    good = fx.save(fx.xray(fx.ramp(16, 16)), tmp / "good.dcm").read_bytes()
    bomb = _zip({"a.dcm": b"\0" * (6 * 1024 * 1024)})  # 6 MB of zeros in ~6 kB: ratio far above the cap
    cases += [
        ("zip-bomb", "ct", [("files", "ct.zip", bomb)], {}),
        ("zip-path-traversal", "ct", [("files", "ct.zip", _zip({"../../etc/evil.dcm": good}))], {}),
        ("zip-absolute-path", "ct", [("files", "ct.zip", _zip({"/tmp/evil.dcm": good}))], {}),
        ("zip-symlink", "ct", [("files", "ct.zip", _symlink_zip())], {}),
        ("zip-truncated", "ct", [("files", "ct.zip", _zip({"a.dcm": good})[:200])], {}),
        ("zip-empty", "ct", [("files", "ct.zip", _zip({}))], {}),
        ("npy-pickle", "ct", [("files", "v.npy", _npy(np.array([{"a": 1}], dtype=object)))], {}),
        ("npy-2d", "ct", [("files", "v.npy", _npy(np.zeros((8, 8), np.int16)))], {}),
        ("npy-too-big-header", "ct", [("files", "v.npy", _npy(np.zeros((1, 1, 1), np.int16)).replace(b"(1, 1, 1)", b"(900, 900, 9)"))], {}),
        ("ct-png-to-the-stack-model", "ct", [("files", "x.png", cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())], {"models": "ct2d"}),
        ("ct-png-plus-a-dicom", "ct", [("files", "x.png", cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()), ("files", "x.dcm", good)], {}),
        ("ct-truncated-png-slice", "ct", [("files", "x.png", cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[1].tobytes()[:300])], {}),
        ("ct-series-to-the-slice-model", "ct", [("files", "a.dcm", good), ("files", "b.dcm", good)], {"models": "ctslice"}),
        ("ct-single-xray-dicom", "ct", [("files", "x.dcm", good)], {}),
        ("ct-bad-models-param", "ct", [("files", "x.dcm", good)], {"models": "ct4d"}),
        ("png-dimension-bomb", "xray", [("file", "x.png", _png_header_bomb())], {}),
        ("png-garbage", "xray", [("file", "x.png", b"\x89PNG\r\n\x1a\n" + b"\x13" * 200)], {}),
        ("xray-with-zip", "xray", [("file", "x.zip", _zip({"a.dcm": good}))], {}),
        ("xray-random-bytes", "xray", [("file", "x.bin", np.random.default_rng(0).bytes(4096))], {}),
        ("xray-ct-modality", "xray", [("file", "ct.dcm", fx.save(fx.ct_slice(fx.ramp(16, 16, lo=-1000, hi=200)), tmp / "ct.dcm").read_bytes())], {}),
        ("indicators-too-many", "indicators", [("crops", f"c{i}.png", b"x") for i in range(70)], {}),
        ("explain-two-xrays", "explain", [("files", "a.dcm", good), ("files", "b.dcm", good)], {"model": "xray"}),
        ("missing-file-field", "xray", [("other", "a.dcm", good)], {}),
    ]
    return cases


def test_hostile_corpus_gets_4xx_json_and_the_service_keeps_answering(served, files, tmp_path):
    cases = _hostile_cases(tmp_path)
    results = {}
    for name, route, parts, data in cases:
        r = requests.post(f"{served.url}/{route}", files=[(f, (n, b)) for f, n, b in parts], data=data, timeout=120)
        results[name] = r.status_code
        assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text[:300]}"
        body = r.json()
        assert "error" in json.dumps(body), f"{name}: {body}"
        assert str(tmp_path) not in r.text and "/tmp/" not in r.text.replace("/tmp/evil", ""), f"{name} leaks a path: {r.text}"
    assert len(cases) >= 30
    # raw-socket cases: wrong content types, oversized body (declared and streamed), slow client
    status, body = _raw(served, b"POST /xray HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    assert 400 <= status < 500 and "error" in json.dumps(body)
    status, body = _raw(served, b"POST /xray HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"file\": 1}")
    assert 400 <= status < 500
    status, body = _raw(served, _multipart("xray", "file", "big.dcm", b"\0" * 16, declared=50 * 1024 * 1024))
    assert status == 413 and body["code"] == "body_too_large"
    big = _multipart("ct", "files", "big.npy", b"\0" * (3 * 1024 * 1024))
    chunked = big.replace(b"Content-Length: ", b"X-Ignored: ")
    head, _, payload = chunked.partition(b"\r\n\r\n")
    stream = head + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        f"{len(payload[i:i + 65536]):x}\r\n".encode() + payload[i : i + 65536] + b"\r\n" for i in range(0, len(payload), 65536)) + b"0\r\n\r\n"  # fmt: skip
    status, body = _raw(served, stream)
    assert status == 413 and body["code"] == "body_too_large"
    start = time.monotonic()
    status, body = _raw(served, _multipart("xray", "file", "slow.dcm", b"\0" * 1000), pause_after=300, wait_s=5.0)
    assert status == 408 and body["code"] == "body_timeout" and time.monotonic() - start < 30
    # still answering, with the same prediction as before the corpus
    assert served.alive()
    r = post(served, "xray", [("file", files["cr"])])
    assert r.status_code == 200 and r.json()["model"]["version"] == "1"


def test_overload_answers_429_not_a_timeout(served, files):
    """More stalled uploads than serve.max_concurrency: the next request is refused at once with 429."""
    host, port = served.url.removeprefix("http://").split(":")
    socks = []
    try:
        for _ in range(srv.SERVE_PARAMS["max_concurrency"]):
            s = socket.create_connection((host, int(port)), timeout=30)
            s.sendall(_multipart("xray", "file", "slow.dcm", b"\0" * 1000)[:200])
            socks.append(s)
        time.sleep(0.5)
        start = time.monotonic()
        r = post(served, "xray", [("file", files["cr"])])
        assert r.status_code == 429 and "error" in r.json() and time.monotonic() - start < 5
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if post(served, "xray", [("file", files["cr"])]).status_code == 200:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the service did not recover after the stalled uploads")


def test_concurrent_xray_requests_all_answered(served, files):
    results = []

    def call():
        results.append(post(served, "xray", [("file", files["png"])]).status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200, 200]


# ---------------------------------------------------------------------------------- PHI
def test_sentinel_phi_never_reaches_a_response_or_the_log(served, files, tmp_path):
    sentinels = [v for v in fx.SENTINELS.values()] + ["SENTINEL"]
    answers = [post(served, "xray", [("file", files["cr"])]), post(served, "xray", [("file", files["dx_mono1"])]),
               post(served, "ct", [("files", p) for p in files["slices"]]), post(served, "ct", [("files", files["zip"])]),
               post(served, "ct", [("files", files["ct_slice_dicom"])]),
               post(served, "explain", [("files", files["cr"])], {"model": "xray"})]  # fmt: skip
    # error paths too: a broken file with identifying headers, and a wrong modality
    bad = fx.xray()
    bad.BitsStored = 20
    path = tmp_path / "bad.dcm"
    bad.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
    answers.append(post(served, "xray", [("file", path)]))
    answers.append(post(served, "xray", [("file", fx.save(fx.ct_slice(fx.ramp(16, 16, lo=-900, hi=100)), tmp_path / "ct.dcm"))]))
    assert [a.status_code for a in answers] == [200] * 6 + [422, 415]
    text = "\n".join(a.text for a in answers) + "\n" + "\n".join(str(a.headers) for a in answers)
    time.sleep(1.0)
    text += served.log.read_text(errors="replace")
    for s in sentinels:
        assert s not in text, f"{s!r} leaked"
    for tag in ("PatientName", "PatientID", "InstitutionName", "AccessionNumber", "StudyDate", "PatientBirthDate"):
        assert tag not in "\n".join(a.text for a in answers)


# ------------------------------------------------------------------------ decoding workers
def _decoder_workers(root_pid: int) -> list:
    """The service's pre-started sandboxed decoders (multiprocessing spawn children under the server)."""
    import psutil

    out = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _running(p) -> bool:
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killed_decoding_workers_are_replaced_and_the_service_keeps_answering(served, files):
    import psutil

    assert post(served, "xray", [("file", files["cr"])]).status_code == 200
    victims = _decoder_workers(served.process.pid)
    assert len(victims) == 2  # serve.decode_workers (default) in the one front worker: pre-started, not one per request
    for p in victims:
        p.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(p) for p in victims):  # dead (a zombie until the pool reaps it)
        time.sleep(0.1)
    assert not any(_running(p) for p in victims)
    for key in ("cr", "png"):
        r = post(served, "xray", [("file", files[key])])
        assert r.status_code == 200, r.text
    r = post(served, "ct", [("files", p) for p in files["slices"]])
    assert r.status_code == 200, r.text
    fresh = _decoder_workers(served.process.pid)
    assert fresh and not {p.pid for p in fresh} & {p.pid for p in victims}


def test_stopping_the_service_leaves_no_process(tmp_path_factory, files):
    """SIGTERM to `bentoml serve` alone: every worker and decoder under it exits by itself (nothing is killed here)."""
    import psutil

    s = srv.start(tmp_path_factory.mktemp("serve-stop"))
    try:
        assert post(s, "xray", [("file", files["cr"])]).status_code == 200
        tree = psutil.Process(s.process.pid).children(recursive=True)
        assert len(_decoder_workers(s.process.pid)) == 2
        s.process.terminate()
        s.process.wait(60)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, f"left running after the service stopped: {[(p.pid, ' '.join(p.cmdline())[:80]) for p in alive]}"
    finally:
        srv.stop(s)
