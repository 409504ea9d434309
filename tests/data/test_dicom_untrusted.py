"""decode_untrusted: the decode runs in a child process with an address-space cap and a timeout."""

from __future__ import annotations

import numpy as np
import pytest

from covidscan.config import DicomLimits
from covidscan.data import dicom as D
from tests.data import dicom_factory as fx

LIMITS = DicomLimits()


def test_untrusted_image_and_series_match_in_process(tmp_path):
    path = fx.save(fx.xray(photometric="MONOCHROME1", window=(2000, 1000)), tmp_path / "x.dcm")
    img = D.decode_untrusted(path, LIMITS, max_memory_mb=256, timeout_s=60)
    ref = D.read_image(path, LIMITS)
    assert isinstance(img, D.DicomImage) and img.path == path
    np.testing.assert_array_equal(img.pixels, ref.pixels)
    assert img.meta == ref.meta and img.spacing == ref.spacing
    fx.write_series(tmp_path / "s", fx.volume(4))
    vol = D.decode_untrusted(tmp_path / "s", LIMITS, max_memory_mb=256, timeout_s=60)
    assert isinstance(vol, D.CTVolume)
    np.testing.assert_array_equal(vol.hu, D.read_series(tmp_path / "s", LIMITS).hu)


def test_untrusted_reraises_the_typed_error(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all" * 20)
    with pytest.raises(D.NotDicomError, match="not a DICOM file") as info:
        D.decode_untrusted(bad, LIMITS, max_memory_mb=256, timeout_s=60)
    assert str(bad) in str(info.value)


def test_untrusted_memory_cap(tmp_path):
    # 2 MB stored -> several float64 temporaries of 8 MB while windowing: over a 4 MB cap
    path = fx.save(fx.xray(fx.ramp(1024, 1024, hi=4095), window=(2000, 1000)), tmp_path / "big.dcm")
    with pytest.raises(D.DecodeResourceError, match="max_memory_mb") as info:
        D.decode_untrusted(path, LIMITS, max_memory_mb=4, timeout_s=60)
    assert str(path) in str(info.value)


def test_untrusted_timeout(tmp_path):
    path = fx.save(fx.xray(), tmp_path / "x.dcm")
    with pytest.raises(D.DecodeTimeoutError, match="longer than"):
        D.decode_untrusted(path, LIMITS, max_memory_mb=256, timeout_s=0.01)  # a spawn alone takes longer


def test_untrusted_picture_matches_the_ingest_reader_and_keeps_its_typed_error(tmp_path):
    import cv2

    from covidscan.data.sources.image_files import read_grey
    from covidscan.errors import DataError

    grey = (np.random.default_rng(1).random((40, 30)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "s.png"), grey)
    cv2.imwrite(str(tmp_path / "s.jpg"), grey)
    for name in ("s.png", "s.jpg"):
        got = D.decode_untrusted_picture(tmp_path / name, 10**6, max_memory_mb=256, timeout_s=60)
        np.testing.assert_array_equal(got, read_grey(tmp_path / name, 10**6))
        assert got.dtype == np.float32 and got.shape == (40, 30)
    with pytest.raises(DataError, match="exceed the configured limit"):
        D.decode_untrusted_picture(tmp_path / "s.png", 100, max_memory_mb=256, timeout_s=60)
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((3000, 3000), np.uint8))  # tiny file, 9 Mpx -> 36 MB float32 and more
    with pytest.raises(D.DecodeResourceError, match="max_memory_mb"):
        D.decode_untrusted_picture(big, 10**8, max_memory_mb=8, timeout_s=60)


# ------------------------------------------------------------------------------ the worker pool
def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids, timeout_s: float = 20.0) -> list[int]:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.fixture(scope="module")
def pool():
    with D.DecoderPool(1, max_memory_mb=64) as p:
        yield p


def test_pool_decodes_as_the_one_shot_child_and_reuses_its_worker_up_to_max_jobs(tmp_path):
    with D.DecoderPool(1, max_memory_mb=64, max_jobs=3) as pool:
        _decodes_and_recycles(pool, tmp_path)


def _decodes_and_recycles(pool, tmp_path):
    path = fx.save(fx.xray(photometric="MONOCHROME1", window=(2000, 1000)), tmp_path / "x.dcm")
    fx.write_series(tmp_path / "s", fx.volume(4))
    img = D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=60, pool=pool)  # the pool's own cap applies
    first = pool.pids()
    vol = D.decode_untrusted(tmp_path / "s", LIMITS, max_memory_mb=0, timeout_s=60, pool=pool)
    assert pool.pids() == first and len(first) == 1  # the same pre-started worker, no spawn per job
    ref = D.read_image(path, LIMITS)
    np.testing.assert_array_equal(img.pixels, ref.pixels)
    assert img.meta == ref.meta and img.path == path
    np.testing.assert_array_equal(vol.hu, D.read_series(tmp_path / "s", LIMITS).hu)
    D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=60, pool=pool)  # the third job: max_jobs reached
    assert _wait_gone(first) == [] and D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=60, pool=pool).pixels.shape == ref.pixels.shape
    assert pool.pids() != first


def test_pool_keeps_a_worker_after_a_typed_error_and_batches_with_the_failing_index(pool, tmp_path):
    import cv2

    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all" * 20)
    good = fx.save(fx.xray(), tmp_path / "x.dcm")
    grey = (np.random.default_rng(1).random((20, 30)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), grey)
    limits = LIMITS.model_dump_json()
    out = pool.decode_many([D.picture_job(tmp_path / "c.png", 10**6), ("image", good, limits)], timeout_s=60)
    assert out[0].shape == (20, 30) and isinstance(out[1], D.DicomImage)
    before = pool.pids()
    with pytest.raises(D.NotDicomError, match="not a DICOM file") as info:
        pool.decode_many([("image", good, limits), ("image", bad, limits), ("image", good, limits)], timeout_s=60)
    assert info.value.job_index == 1 and str(bad) in str(info.value)
    assert pool.pids() == before  # a reader's typed error does not cost a worker


def test_pool_memory_bomb_kills_only_its_worker_and_the_next_job_succeeds(pool, tmp_path):
    import cv2

    bomb = tmp_path / "bomb.png"
    cv2.imwrite(str(bomb), np.zeros((5000, 5000), np.uint8))  # tens of kB -> 25 Mpx: 100 MB as float32, over the 64 MB cap
    before = pool.pids()
    with pytest.raises(D.DecodeResourceError):
        D.decode_untrusted_picture(bomb, 10**8, max_memory_mb=0, timeout_s=60, pool=pool)
    assert _wait_gone(before) == []  # that worker was retired, not reused
    path = fx.save(fx.xray(), tmp_path / "x.dcm")
    assert D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=60, pool=pool).pixels.size > 0


def test_pool_timeout_and_a_killed_worker_are_replaced(pool, tmp_path):
    import os
    import signal

    path = fx.save(fx.xray(fx.ramp(1024, 1024, hi=4095), window=(2000, 1000)), tmp_path / "x.dcm")
    D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=60, pool=pool)  # a worker is ready
    with pytest.raises(D.DecodeTimeoutError, match="longer than"):
        D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=0.002, pool=pool)
    victim = pool.pids()
    for pid in victim:
        os.kill(pid, signal.SIGKILL)
    assert _wait_gone(victim) == []
    img = D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=60, pool=pool)
    assert img.pixels.shape == (1024, 1024) and not set(pool.pids()) & set(victim)


def test_pool_close_and_parent_death_leave_no_worker(tmp_path):
    import subprocess
    import sys

    p = D.DecoderPool(2, max_memory_mb=64)
    path = fx.save(fx.xray(), tmp_path / "x.dcm")
    D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=60, pool=p)
    pids = p.pids()
    assert len(pids) == 2
    p.close()
    assert _wait_gone(pids, 5) == [] and p.pids() == []
    with pytest.raises(D.DecodeError, match="closed"):
        D.decode_untrusted(path, LIMITS, max_memory_mb=0, timeout_s=60, pool=p)
    # a parent killed without any clean-up (os._exit): its workers see the pipe close and exit
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys\n"
        "from covidscan.config import DicomLimits\n"
        "from covidscan.data import dicom as D\n"
        "if __name__ == '__main__':\n"
        "    p = D.DecoderPool(2, max_memory_mb=64)\n"
        f"    D.decode_untrusted({str(path)!r}, DicomLimits(), max_memory_mb=0, timeout_s=60, pool=p)\n"
        "    import time; time.sleep(1.0)\n"
        "    print(' '.join(map(str, p.pids())), flush=True)\n"
        "    os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True).stdout.split()
    orphans = [int(x) for x in out]
    assert len(orphans) == 2 and _wait_gone(orphans) == []
