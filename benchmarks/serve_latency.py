"""Serving latency on loopback, against a bare reference measured in the same run; and a bounded soak.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_latency.py                       # tiny models
    PYTHONPATH=src .venv/bin/python benchmarks/serve_latency.py --models models       # make demo's checkpoints
    PYTHONPATH=src .venv/bin/python benchmarks/serve_latency.py --url http://127.0.0.1:3000   # a running `make serve`
    PYTHONPATH=src .venv/bin/python benchmarks/serve_latency.py --soak 600            # 10 minutes of mixed traffic

What one run measures (same payloads, same models, same machine, one after the other):

1. **reference**: the bare path in one process: pydicom ``dcmread`` + the package's preprocessing
   (``covidscan.preprocess``, the path training uses) + a torch forward of the same served model
   (``inference_mode``; on CUDA bf16 autocast and channels_last, as the engine does).
2. **predictor**: the package's in-process ``covidscan.serving.predictor.Predictor`` (untrusted-input
   checks, sandboxed decoding in its pre-started workers, preprocessing, forward).
3. **service**: the real ``bentoml serve`` of ``bento/service.py`` on 127.0.0.1 (started by this script
   with models registered in a temporary MLflow store and imported by ``bento/import_models.py``), at
   concurrency 1, 4 and 8: p50/p90/p99 latency and requests/s.

Routes: ``xray`` (one 512x512 uncompressed DICOM), ``ct`` (a 40-slice 512x512 series), ``ct_slice``
(one 512x512 CT slice DICOM; the CT-slice model), ``indicators`` (four lesion crop PNGs). Payloads are
made by the project's synthetic DICOM writer (``tests/data/dicom_factory.py``) with fake identities.
Models: tiny untrained ones (default), or ``--models DIR`` with ``make demo``'s checkpoints (a role
without a checkpoint there gets a tiny model, and the output says so). The device is the engine's
(``COVIDSCAN_DEVICE``, default ``auto``: CUDA when present); the script runs unchanged on a GPU and
prints the per-volume end-to-end time next to Yao et al. (2021)'s 0.66 s per CT volume.

``--soak SECONDS``: mixed traffic at concurrency 4 (X-rays, CT series, CT slices, crops and the
hostile corpus of ``tests/serving``; a warm-up of min(30 s, SECONDS/4) first), the RSS of every service
process sampled every 10 s, the first sample and the last taken with nothing in flight (first, last,
peak, growth), the
number of 5xx, of requests without an answer, and of answers other than expected (hostile -> 4xx,
valid -> 200). ``--route`` limits the valid traffic to some routes and ``--hostile-share`` sets the
hostile share (to bisect a growth); each process's RSS is also split into anonymous, file and shared
memory, with its thread count. Only loopback URLs are accepted. Prints JSON (``--json``) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
YAO_S_PER_VOLUME = 0.66  # Yao et al. 2021: end-to-end time per CT volume
ROUTES = ("xray", "ct", "ct_slice", "indicators")


# ------------------------------------------------------------------------------------ payloads
def payloads(tmp: Path, xray_size: int = 512, ct_slices: int = 40, ct_size: int = 512, n_crops: int = 4) -> dict[str, list[Path]]:
    """Synthetic uploads (fake identities): an X-ray DICOM, a CT series, one CT slice, lesion crop PNGs."""
    import cv2

    from tests.data import dicom_factory as fx

    rng = np.random.default_rng(0)
    xray = fx.save(fx.xray(rng.integers(0, 4000, (xray_size, xray_size))), tmp / "xray.dcm")
    series = tmp / "series"
    series.mkdir()
    base = fx.ramp(ct_size, ct_size, lo=-1000, hi=200) + rng.integers(-30, 30, (ct_size, ct_size))
    vol = np.stack([base + 10 * k for k in range(ct_slices)])
    slices = fx.write_series(series, vol, spacing_z=2.5)
    one = fx.save(fx.ct_slice(vol[ct_slices // 2]), tmp / "ct_slice.dcm")
    crops = []
    for i in range(n_crops):
        img = (rng.random((96, 96)) * 200 + 30).astype(np.uint8)
        cv2.imwrite(str(tmp / f"crop{i}.png"), img)
        crops.append(tmp / f"crop{i}.png")
    return {"xray": [xray], "ct": slices, "ct_slice": [one], "indicators": crops}


def route_request(route: str, files: list[Path]) -> tuple[str, list[tuple[str, tuple[str, bytes]]]]:
    """(URL path, multipart parts) of a route's request."""
    path, field = {"xray": ("xray", "file"), "ct": ("ct", "files"), "ct_slice": ("ct", "files"), "indicators": ("indicators", "crops")}[route]
    return path, [(field, (p.name, p.read_bytes())) for p in files]


def encoded(parts, data: dict | None = None) -> tuple[bytes, str]:
    """The multipart body and its content type, encoded once (as a client streaming stored files would send them)."""
    import requests

    req = requests.Request("POST", "http://127.0.0.1/", files=parts, data=data or {}).prepare()
    return req.body, req.headers["Content-Type"]


# ----------------------------------------------------------------------------------- reference
class Reference:
    """The bare path: pydicom + the package's preprocessing + torch forward of the served model, in one process."""

    def __init__(self, bundles: dict[str, Path], device: str) -> None:
        import torch

        from covidscan.device import resolve_device
        from covidscan.models.zoo import load_model
        from covidscan.preprocess import input_spec
        from covidscan.serving.bundle import MODEL_FILE, read_bundle

        self.torch = torch
        self.device = str(resolve_device(device, "--device"))
        self.cuda = self.device.startswith("cuda")
        self.pre = {r: read_bundle(b).preprocess_config() for r, b in bundles.items()}
        self.kind = {r: read_bundle(b).kind for r, b in bundles.items()}
        self.models = {}
        for r, b in bundles.items():
            m = load_model(Path(b) / MODEL_FILE, map_location=self.device).eval()
            if self.cuda and self.kind[r] != "ct_volume":
                m = m.to(memory_format=torch.channels_last)
            self.models[r] = m
        spec_kind = {"xray": "xray", "ct2d": "ct_stack", "ct3d": "ct_volume", "ctslice": "ct_slice2d", "indicators": "lesion_crop"}
        self.spec = {r: input_spec(spec_kind[r], self.pre[r]) for r in bundles}

    def forward(self, role: str, arr: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = self.spec[role].to_tensor(arr)
        x = x if x.ndim == len(self.spec[role].shape) + 1 else x[None]
        with torch.inference_mode():
            if self.cuda:
                x = x.to(self.device, non_blocking=True)
                if x.ndim == 4 and self.kind[role] != "ct_volume":
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    y = self.models[role](x)
            else:
                y = self.models[role](x)
            return torch.softmax(y.float(), 1).cpu().numpy() if self.models[role].card.task != "regression" else y.float().cpu().numpy()

    @staticmethod
    def _hu(ds) -> np.ndarray:
        return ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))

    def xray(self, files: list[Path]) -> np.ndarray:
        import pydicom

        from covidscan.preprocess import preprocess_2d

        grey = pydicom.dcmread(files[0]).pixel_array.astype(np.float32)
        return self.forward("xray", preprocess_2d(grey, self.pre["xray"], kind="xray", what="reference"))

    def ct(self, files: list[Path]) -> dict[str, np.ndarray]:
        import pydicom

        from covidscan.preprocess.ct import ct_stack, ct_volume

        dss = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
        hu = np.clip(np.rint(np.stack([self._hu(d) for d in dss])), -32768, 32767).astype(np.int16)
        dz = abs(float(dss[1].ImagePositionPatient[2]) - float(dss[0].ImagePositionPatient[2]))
        out = {}
        if "ct2d" in self.models:
            out["ct2d"] = self.forward("ct2d", ct_stack(hu, self.pre["ct2d"], what="reference"))
        if "ct3d" in self.models:
            out["ct3d"] = self.forward("ct3d", ct_volume(hu, dz, self.pre["ct3d"], what="reference"))
        return out

    def ct_slice(self, files: list[Path]) -> np.ndarray:
        import pydicom

        from covidscan.preprocess import model_inputs
        from covidscan.preprocess.ct import slice_grey

        hu = np.clip(np.rint(self._hu(pydicom.dcmread(files[0]))), -32768, 32767).astype(np.int16)
        grey = slice_grey(hu, self.pre["ctslice"], what="reference")
        return self.forward("ctslice", model_inputs(grey, "ct_slice2d", self.pre["ctslice"], what="reference")["ct_slice2d"])

    def indicators(self, files: list[Path]) -> np.ndarray:
        import cv2

        from covidscan.preprocess.xray import lesion_crop

        crops = []
        for f in files:
            g = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            crops.append(lesion_crop(g, (0, 0, g.shape[1], g.shape[0]), self.pre["indicators"], what="reference"))
        return self.forward("indicators", np.stack(crops))


def timed(call: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def summary(latencies: list[float], wall: float | None = None) -> dict:
    if not latencies:
        return {"n": 0}
    q = np.percentile(latencies, [50, 90, 99])
    out = {"n": len(latencies), "p50_ms": round(1000 * q[0], 1), "p90_ms": round(1000 * q[1], 1), "p99_ms": round(1000 * q[2], 1)}
    out["rps"] = round(len(latencies) / wall, 2) if wall else round(1 / float(np.mean(latencies)), 2)
    return out


# ---------------------------------------------------------------------------------------- HTTP
def load(url: str, route: str, files: list[Path], n_requests: int, concurrency: int, time_limit: float) -> dict:
    """Send up to ``n_requests`` (``concurrency`` at a time, one keep-alive session per thread) within ``time_limit`` s."""
    import requests

    path, parts = route_request(route, files)
    body, content_type = encoded(parts)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()
    deadline = time.monotonic() + time_limit

    def one(_: int) -> None:
        if time.monotonic() > deadline:
            return
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        start = time.perf_counter()
        try:
            status = str(session.post(f"{url}/{path}", data=body, headers={"Content-Type": content_type}, timeout=120).status_code)
        except requests.RequestException as err:
            status = f"no answer ({type(err).__name__})"
        elapsed = time.perf_counter() - start
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                latencies.append(elapsed)

    for _ in range(concurrency):  # warm the connections and the workers
        one(0)
    latencies.clear()
    statuses.clear()
    wall = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - wall
    return {**summary(latencies, wall), "concurrency": concurrency, "statuses": statuses}


# ---------------------------------------------------------------------------------------- soak
def service_processes(root_pid: int) -> dict[int, dict]:
    """pid -> {rss_mb, what} of the server and every process under it (psutil, else /proc)."""
    try:
        import psutil

        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
        out = {}
        for p in procs:
            try:
                cmd = " ".join(p.cmdline())
                out[p.pid] = {"rss_mb": p.memory_info().rss / 2**20, "what": _what(cmd), **_rss_parts(p.pid)}
            except psutil.NoSuchProcess:
                pass
        return out
    except ImportError:
        out, todo = {}, [root_pid]
        while todo:
            pid = todo.pop()
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                rss = int([ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS")][0].split()[1]) / 1024
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError):
                continue
            out[pid] = {"rss_mb": rss, "what": _what(cmd), **_rss_parts(pid)}
            todo += [int(k) for k in kids]
        return out


def _rss_parts(pid: int) -> dict[str, float]:
    """Linux: the RSS split into anonymous memory (heaps, arrays), file pages and shared memory, in MB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    keys = {"RssAnon:": "anon_mb", "RssFile:": "file_mb", "RssShmem:": "shmem_mb", "Threads:": "threads"}
    out = {}
    for ln in lines:
        head, *rest = ln.split()
        if head in keys and rest:
            out[keys[head]] = int(rest[0]) / (1 if head == "Threads:" else 1024)
    return out


def _what(cmd: str) -> str:
    if "spawn_main" in cmd:
        return "decoder worker"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "bentoml serve" in cmd or "bentoml_cli" in cmd or cmd.rstrip().endswith("service:Covidscan"):
        return "bentoml serve (arbiter)"
    if "worker" in cmd and "covidscan-models" in cmd.lower():
        return "model service worker"
    return "service worker" if "_bentoml_impl" in cmd else cmd[:60]


def soak(url: str, root_pid: int | None, files: dict[str, list[Path]], tmp: Path, seconds: float, concurrency: int = 4,
         routes: list[str] | None = None, hostile_share: float = 0.25) -> dict:  # fmt: skip
    """Mixed traffic for ``seconds`` at ``concurrency``: valid uploads (expect 200) of ``routes`` (default: all) and,
    ``hostile_share`` of the requests, the hostile corpus (expect 4xx)."""
    import requests

    from tests.serving.test_service import _hostile_cases

    hostile_dir = tmp / "hostile"
    hostile_dir.mkdir()
    hostile = [(name, route, [(f, (n, b)) for f, n, b in parts], data) for name, route, parts, data in _hostile_cases(hostile_dir)]
    valid = [(r, *route_request(r, files[r])) for r in (routes or ROUTES) if files.get(r)]
    rng = random.Random(0)
    counts = {"sent": 0, "answered": 0, "5xx": 0, "no_answer": 0, "unexpected": 0, "valid_200": 0, "hostile_4xx": 0}
    unexpected: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()
    warmup = min(30.0, seconds / 4)  # every code path loaded and every buffer sized before the RSS baseline
    start = time.monotonic()
    deadline = start + warmup + seconds
    samples: list[tuple[float, dict[int, dict]]] = []
    stop_sampling = threading.Event()

    def sampler() -> None:
        if not root_pid:
            return
        while True:
            samples.append((time.monotonic() - start - warmup, service_processes(root_pid)))
            if stop_sampling.wait(10.0):
                return

    def worker(seed: int, until: float | None = None) -> None:
        r = random.Random(seed)
        while time.monotonic() < (until or deadline):
            session = getattr(local, "s", None) or requests.Session()
            local.s = session
            if r.random() < hostile_share or not valid:
                name, route, parts, data = r.choice(hostile)
                ok = lambda s: 400 <= s < 500  # noqa: E731
            else:
                name, route, parts = r.choice(valid)
                data = {}
                ok = lambda s: s == 200  # noqa: E731
            try:
                status = session.post(f"{url}/{route}", files=parts, data=data, timeout=120).status_code
            except requests.RequestException:
                status = None
                local.s = None
            with lock:
                counts["sent"] += 1
                if status is None:
                    counts["no_answer"] += 1
                    continue
                counts["answered"] += 1
                counts["5xx"] += status >= 500
                if ok(status):
                    counts["valid_200" if status == 200 else "hostile_4xx"] += 1
                else:
                    counts["unexpected"] += 1
                    unexpected[f"{name}->{status}"] = unexpected.get(f"{name}->{status}", 0) + 1

    warm_deadline = start + warmup
    with ThreadPoolExecutor(concurrency) as pool:  # the warm-up, then 2 s with nothing in flight before the baseline
        list(pool.map(lambda seed: worker(seed, warm_deadline), [rng.randrange(1 << 30) for _ in range(concurrency)]))
    time.sleep(2.0)
    start = time.monotonic() - warmup
    deadline = start + warmup + seconds
    threading.Thread(target=sampler, daemon=True).start()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, [rng.randrange(1 << 30) for _ in range(concurrency)]))
    stop_sampling.set()
    time.sleep(2.0)  # nothing in flight: what the processes keep
    if root_pid:
        samples.append((time.monotonic() - start - warmup, service_processes(root_pid)))
    procs = []
    for pid in sorted({pid for _, snap in samples for pid in snap}):
        seen = [(t, snap[pid]) for t, snap in samples if pid in snap]
        (t0, first), (t1, last) = seen[0], seen[-1]
        row = {"pid": pid, "what": first["what"], "seen_s": [round(t0), round(t1)], "rss_first_mb": round(first["rss_mb"], 1),
               "rss_last_mb": round(last["rss_mb"], 1), "rss_peak_mb": round(max(x["rss_mb"] for _, x in seen), 1),
               "growth_pct": round(100 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 1)}  # fmt: skip
        for part in ("anon_mb", "file_mb", "shmem_mb", "threads"):  # where the RSS is (Linux)
            if part in first and part in last:
                row[f"{part}_first_last"] = [round(first[part], 1), round(last[part], 1)]
        procs.append(row)
    return {"seconds": seconds, "warmup_s": warmup, "concurrency": concurrency, "routes": list(routes or ROUTES), "hostile_share": hostile_share, **counts, "unexpected_by_case": unexpected, "processes": procs,
            "rss_samples_mb": [{"t_s": round(t), **{str(pid): round(x["rss_mb"]) for pid, x in snap.items()}} for t, snap in samples],
            "note": "RSS from the end of the warm-up to the end; decoder workers are replaced after serve.decode_max_jobs jobs or a "
                    "failure, so a decoder pid seen only part of the time is a replaced worker"}  # fmt: skip


# ---------------------------------------------------------------------------------------- main
def machine() -> dict:
    import torch

    out = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip
    try:
        out["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return out


def table(report: dict) -> str:
    rows = ["| route | reference p50 | predictor p50 | service c | p50 | p90 | p99 | req/s | service p50 - reference p50 |", "|---|---|---|---|---|---|---|---|---|"]
    for route, r in report["routes"].items():
        ref, pred = r.get("reference", {}), r.get("predictor", {})
        for res in r.get("service", []):
            gap = round(res["p50_ms"] - ref["p50_ms"], 1) if res.get("n") and ref.get("n") else "-"
            rows.append(f"| {route} | {ref.get('p50_ms', '-')} ms | {pred.get('p50_ms', '-')} ms | {res['concurrency']} | {res.get('p50_ms', '-')} ms | "
                        f"{res.get('p90_ms', '-')} ms | {res.get('p99_ms', '-')} ms | {res.get('rps', '-')} | {gap} ms |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service on loopback (then no reference, no predictor, no RSS)")
    parser.add_argument("--models", type=Path, help="checkpoints to serve (make demo's models/); default tiny models")
    parser.add_argument("--route", choices=ROUTES, action="append", help="default: all (also the soak's valid traffic)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=60, help="requests per route and concurrency")
    parser.add_argument("--repeats", type=int, default=30, help="in-process timings per route (reference, predictor)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per route and concurrency")
    parser.add_argument("--ct-slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=512, help="rows = columns of the X-ray and of each CT slice")
    parser.add_argument("--device", default=os.environ.get("COVIDSCAN_DEVICE", "auto"))
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of mixed traffic at concurrency 4 (instead of the latency runs)")
    parser.add_argument("--hostile-share", type=float, default=0.25, help="soak: share of hostile uploads (0 to 1; 1: only hostile)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--serve", action="append", default=[], metavar="KEY=VALUE", help="a params.yaml serve key for the started service (YAML value)")
    args = parser.parse_args(argv)
    os.environ.setdefault("COVIDSCAN_DEVICE", args.device)
    routes = args.route or list(ROUTES)
    report: dict = {"machine": machine(), "payload": {"size": args.size, "ct_slices": args.ct_slices, "crops": 4}, "routes": {}}
    served = None
    with tempfile.TemporaryDirectory(prefix="covidscan-serve-latency-") as tmp:
        tmp = Path(tmp)
        files = payloads(tmp, args.size, args.ct_slices, args.size)
        if args.url:
            url = args.url.rstrip("/")
            if urlparse(url).hostname not in LOOPBACK:
                print(f"error: {url} is not a loopback address; this benchmark only targets 127.0.0.1/localhost", file=sys.stderr)
                return 2
        else:
            from covidscan.config import load_params
            from tests.serving import server as srv

            srv.SERVE_PARAMS.clear()  # the package's serving defaults (decode pool, caps, batching) ...
            srv.SERVE_PARAMS.update(max_concurrency=max(8, 2 * max(args.concurrency)))  # ... with room for the highest concurrency
            import yaml

            srv.SERVE_PARAMS.update({k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.serve)})
            report["serve_params"] = dict(srv.SERVE_PARAMS)
            os.environ["COVIDSCAN_DEVICE"] = args.device
            pre = load_params(ROOT / "params.yaml").preprocess.model_dump(mode="json") if args.models else None
            started = time.perf_counter()
            served = srv.start(tmp / "serve", timeout_s=300, models_dir=args.models.resolve() if args.models else None, preprocess=pre)
            report["service_start_s"] = round(time.perf_counter() - started, 1)
            report["models"] = {r: ("tiny (untrained)" if u == "tiny" else Path(u).name) for r, u in _models_used(args.models).items()}
            url = served.url
        try:
            if args.soak > 0:
                report["soak"] = soak(url, served.process.pid if served else None, files, tmp, args.soak, routes=routes, hostile_share=args.hostile_share)
            else:
                run_latency(report, url, served, files, routes, args)
        finally:
            if served is not None:
                srv.stop(served)
    print(json.dumps(report, indent=2))
    if "soak" not in report:
        print("\n" + table(report))
        ct = report["routes"].get("ct", {}).get("service", [])
        if ct and ct[0].get("n"):
            print(f"\nper CT volume end to end ({args.ct_slices} slices of {args.size}x{args.size}, HTTP upload to answer, concurrency 1): "
                  f"{ct[0]['p50_ms'] / 1000:.3f} s (p50); Yao et al. 2021: {YAO_S_PER_VOLUME} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _models_used(models: Path | None) -> dict[str, str]:
    from tests.serving.server import MODEL_FILES, _trained

    return {r: (str(models / f) if models is not None and _trained(models / f) else "tiny") for r, f in MODEL_FILES.items()}


def run_latency(report: dict, url: str, served, files: dict[str, list[Path]], routes: list[str], args) -> None:
    predictor = reference = None
    if served is not None:
        from covidscan.config import DicomLimits, ServeConfig
        from covidscan.serving.predictor import Predictor

        bundles = served.bundles()
        reference = Reference(bundles, args.device)
        predictor = Predictor(bundles, ServeConfig.model_validate(served.config["serve"]), DicomLimits.model_validate(served.config["limits"]), device=args.device)
        report["device"] = predictor.engine.device
    calls = {
        "xray": (lambda r: r.xray(files["xray"]), lambda p: p.predict_xray(files["xray"][0])),
        "ct": (lambda r: r.ct(files["ct"]), lambda p: p.predict_ct(files["ct"])),
        "ct_slice": (lambda r: r.ct_slice(files["ct_slice"]), lambda p: p.predict_ct(files["ct_slice"])),
        "indicators": (lambda r: r.indicators(files["indicators"]), lambda p: p.indicators(files["indicators"])),
    }
    for route in routes:  # warm every route of the service (first requests load lazily-imported code)
        load(url, route, files[route], 3, 1, 60)
    time.sleep(2.0)
    try:
        for route in routes:
            entry: dict = {}
            if reference is not None:
                ref_call, pred_call = calls[route]
                entry["reference"] = summary(timed(lambda: ref_call(reference), args.repeats))
                entry["predictor"] = summary(timed(lambda: pred_call(predictor), args.repeats))
            entry["service"] = [load(url, route, files[route], args.requests, c, args.time_limit) for c in args.concurrency]
            report["routes"][route] = entry
            print(f"{route}: done", file=sys.stderr, flush=True)
    finally:
        if predictor is not None:
            predictor.close()


if __name__ == "__main__":
    sys.exit(main())
