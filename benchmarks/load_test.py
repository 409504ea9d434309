"""Bounded loopback load test of the covidscan BentoML service: p50/p99 latency and throughput.

    python benchmarks/load_test.py --url http://127.0.0.1:3000 [--route xray] [--requests 200] [--concurrency 4] [--time-limit 120]
    python benchmarks/load_test.py --self-serve          # tiny registered models, a temporary server

Only loopback URLs are accepted (127.0.0.1, localhost, ::1). The run stops after a fixed number of
requests or the time limit, whichever comes first. Payloads are synthetic DICOM files (an X-ray of
``--xray-size`` pixels, a CT series of ``--ct-slices`` slices) with fake identifying headers. As a
reference measured in the same run, the package's own predictor (decode + preprocess + forward in one
process, no HTTP) is timed on the same file when the bundles are local (``--self-serve``).

Prints one JSON object: per-status counts, latency p50/p90/p99/max (s), throughput (requests/s),
the reference time and the HTTP/in-process ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def payloads(tmp: Path, xray_size: int, ct_slices: int, ct_size: int) -> dict[str, list[Path]]:
    """Synthetic uploads: one X-ray DICOM, one CT series (one file per slice)."""
    from tests.data import dicom_factory as fx

    rng = np.random.default_rng(0)
    xray = fx.save(fx.xray(rng.integers(0, 4000, (xray_size, xray_size))), tmp / "xray.dcm")
    series = tmp / "series"
    series.mkdir()
    base = fx.ramp(ct_size, ct_size, lo=-1000, hi=200)
    vol = np.stack([base + 10 * k for k in range(ct_slices)])
    return {"xray": [xray], "ct": fx.write_series(series, vol, spacing_z=2.5)}


def run(url: str, route: str, files: list[Path], n_requests: int, concurrency: int, time_limit: float) -> dict:
    """Send up to ``n_requests`` (``concurrency`` at a time) within ``time_limit`` seconds."""
    import requests

    field = "file" if route == "xray" else "files"
    blobs = [(field, (p.name, p.read_bytes())) for p in files]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit
    session_local = threading.local()

    def one(_: int) -> None:
        if time.monotonic() > deadline:
            return
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        start = time.perf_counter()
        try:
            status = session.post(f"{url}/{route}", files=blobs, timeout=max(1.0, deadline - time.monotonic() + 30)).status_code
        except requests.RequestException:
            status = 0
        elapsed = time.perf_counter() - start
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(elapsed)

    wall = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - wall
    q = np.percentile(latencies, [50, 90, 99]) if latencies else [float("nan")] * 3
    return {"route": route, "requests_sent": sum(statuses.values()), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "concurrency": concurrency, "wall_s": round(wall, 3), "throughput_rps": round(len(latencies) / wall, 3) if wall else 0.0,
            "latency_s": {"p50": round(float(q[0]), 4), "p90": round(float(q[1]), 4), "p99": round(float(q[2]), 4),
                          "max": round(max(latencies), 4) if latencies else None, "mean": round(statistics.fmean(latencies), 4) if latencies else None}}  # fmt: skip


def reference(bundles: dict[str, Path], route: str, files: list[Path], repeats: int = 5) -> float:
    """Median in-process time of the package's own predictor on the same file (decode isolated as served)."""
    from covidscan.serving.predictor import Predictor

    pred = Predictor(bundles, device="cpu")
    call = (lambda: pred.predict_xray(files[0])) if route == "xray" else (lambda: pred.predict_ct(files))
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--self-serve", action="store_true", help="start a temporary server with tiny registered models")
    parser.add_argument("--route", choices=["xray", "ct"], action="append", help="default: xray and ct")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per route")
    parser.add_argument("--xray-size", type=int, default=512)
    parser.add_argument("--ct-slices", type=int, default=40)
    parser.add_argument("--ct-size", type=int, default=128)
    args = parser.parse_args(argv)
    served = None
    with tempfile.TemporaryDirectory(prefix="covidscan-load-") as tmp:
        tmp = Path(tmp)
        if args.self_serve:
            from tests.serving import server as srv

            srv.SERVE_PARAMS.update(max_concurrency=max(args.concurrency * 2, 8), max_body_mb=256.0, max_files=2000, max_unzipped_mb=1024.0)
            served = srv.start(tmp / "serve")
            url = served.url
        else:
            url = args.url.rstrip("/")
        if urlparse(url).hostname not in LOOPBACK:
            print(f"error: {url} is not a loopback address; this load test only targets 127.0.0.1/localhost", file=sys.stderr)
            return 2
        try:
            files = payloads(tmp, args.xray_size, args.ct_slices, args.ct_size)
            results = []
            for route in args.route or ["xray", "ct"]:
                res = run(url, route, files[route], args.requests, args.concurrency, args.time_limit)
                if served is not None:
                    ref = reference(served.bundles(), route, files[route])
                    res["reference_in_process_s"] = round(ref, 4)
                    res["p50_over_reference"] = round(res["latency_s"]["p50"] / ref, 2) if ref > 0 else None
                results.append(res)
        finally:
            if served is not None:
                srv.stop(served)
    import os

    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps({"machine": machine, "payload": {"xray_size": args.xray_size, "ct_slices": args.ct_slices, "ct_size": args.ct_size},
                      "results": results}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
