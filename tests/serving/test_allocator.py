"""pin_mmap_threshold: freed multi-MB arrays go back to the system instead of fragmenting glibc's heaps."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from covidscan.serving.allocator import pin_mmap_threshold

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import numpy as np
from covidscan.serving.allocator import pin_mmap_threshold

def rss_mb():
    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) // 1024

from covidscan.serving.allocator import release_free_memory

pinned = pin_mmap_threshold(float(sys.argv[1]))
a = np.ones(16 << 20, np.uint8); del a          # glibc's dynamic threshold rises to 16 MB here
base = rss_mb()
arrays = [np.ones(2 << 20, np.uint8) for _ in range(50)]   # 100 MB of 2 MB arrays (a CT request's temporaries)
last = arrays[-1]; del arrays                   # all freed but the last one
if sys.argv[2] == "trim":
    release_free_memory()
print(pinned, rss_mb() - base)
"""


def _held_mb(threshold_mb: float, trim: bool = False) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(threshold_mb), "trim" if trim else "keep"], capture_output=True, text=True, check=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}).stdout.split()  # fmt: skip
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_arrays_are_returned_with_the_threshold_pinned_and_held_without():
    pinned, held = _held_mb(1.0)
    assert pinned and held < 20, f"{held} MB still resident after freeing 98 MB of arrays"
    unpinned, held_default = _held_mb(0.0)
    assert not unpinned and held_default > 50  # the behaviour the service had: glibc's heaps keep them


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_release_free_memory_returns_what_the_heaps_held():
    _, held = _held_mb(0.0, trim=True)
    assert held < 20, f"{held} MB still resident after malloc_trim"


def test_zero_leaves_the_allocator_alone():
    assert pin_mmap_threshold(0) is False


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_tune_allocator_applies_both_settings_and_zero_means_default():
    script = "from covidscan.serving.allocator import tune_allocator; print(tune_allocator(0.125, 2), tune_allocator(0, 0))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}).stdout.strip()  # fmt: skip
    assert out == "{'mmap_threshold': True, 'arena_max': True} {'mmap_threshold': False, 'arena_max': False}"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc")
def test_trimming_starts_no_process(monkeypatch):
    """The front trims after every request: finding the C library must not run ``ldconfig -p`` each time
    (``ctypes.util.find_library`` does, which forked the whole front worker per request; issue 15)."""
    from covidscan.serving.allocator import release_free_memory, tune_allocator

    started = []
    popen = subprocess.Popen

    def counting_popen(*args, **kwargs):
        started.append(args[0] if args else kwargs.get("args"))
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", counting_popen)
    for _ in range(3):
        assert release_free_memory()
    tune_allocator(0, 0)
    assert started == [], f"processes started to find the C library: {started}"
