"""The C allocator of a long-running serving process: arenas capped; optionally a fixed mmap threshold and trimming.

glibc serves an allocation above its mmap threshold with its own ``mmap`` and unmaps it on ``free``;
smaller ones come from its heaps, which only shrink from the top. By default the threshold is
*dynamic*: freeing a mapped chunk raises it to that chunk's size (up to 32 MB), so the multi-MB
buffers of later CT requests come from warm heap pages. Three settings:

* a cap on glibc's per-thread arenas (``serve.malloc_arena_max``, 2; on by default) keeps the request
  threads from each holding a heap of their own;
* a fixed threshold (``serve.mmap_threshold_mb``; ``mallopt(M_MMAP_THRESHOLD)``, which also turns the
  dynamic adjustment off) keeps every buffer of that size or more mapped and returned on free;
* ``malloc_trim`` after each request (``serve.malloc_trim``) returns the free pages inside the heaps.

The last two were on by default (128 kB, trim) while the front worker's growth in the issue-15 soaks
was taken for heap fragmentation. Its cause was elsewhere: finished requests and their bodies were kept
alive for BentoML's 300 s traffic timeout (:mod:`covidscan.serving.request_timeout`). With that fixed,
glibc's defaults keep the front as flat (10-minute soak: +1.2%) and are faster: a fresh mapping is
page-faulted in on every use (on the 2-core VM about 12 us a 4 kB page, ~60 ms per 20 MB), which the
fixed threshold and the trims paid several times per CT request (docs/PERFORMANCE.md). Both stay
available for a deployment that prefers a lower resting RSS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
import threading

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once. ``ctypes.util.find_library`` runs ``/sbin/ldconfig -p`` in a child
    process on every call: per request, that forked the whole front worker (issue 15)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        pass
    try:
        name = ctypes.util.find_library("c")
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _mallopt(param: int, value: int) -> bool:
    libc = _libc()
    try:
        return libc is not None and bool(libc.mallopt(param, int(value)))
    except AttributeError:
        return False


def pin_mmap_threshold(megabytes: float) -> bool:
    """Fix glibc's mmap threshold at ``megabytes`` for this process (0: leave glibc's dynamic default).

    Returns:
        True when the threshold was set; False on a C library without ``mallopt`` (e.g. musl, macOS)
        or with ``megabytes`` 0, where nothing changes.
    """
    if megabytes <= 0:
        return False
    done = _mallopt(M_MMAP_THRESHOLD, int(megabytes * 1024 * 1024))
    if not done:
        log.info("mallopt(M_MMAP_THRESHOLD) not available; the C allocator keeps its defaults")
    return done


def tune_allocator(mmap_threshold_mb: float, arena_max: int) -> dict[str, bool]:
    """A serving process's allocator: the mmap threshold pinned (:func:`pin_mmap_threshold`) and at most
    ``arena_max`` glibc arenas (0: glibc's default of 8 per core). Call it before the request threads
    start: each thread that allocates otherwise may get an arena of its own, and every arena keeps its
    own fragmented high-water mark. Returns which of the two were applied."""
    return {"mmap_threshold": pin_mmap_threshold(mmap_threshold_mb), "arena_max": arena_max > 0 and _mallopt(M_ARENA_MAX, arena_max)}


def release_free_memory() -> bool:
    """Give the C allocator's free pages back to the system (glibc ``malloc_trim(0)``: every arena, also
    pages in the middle of a heap). With ``serve.malloc_trim`` the front calls it after each request, so what a CT series needed
    while in flight is not kept fragmented in its heaps. False where there is no ``malloc_trim``."""
    libc = _libc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:
        return False


_trim_pending = threading.Lock()


def release_free_memory_soon() -> None:
    """:func:`release_free_memory` in a background thread, off the request's path; skipped while one is
    already running (one trim covers every arena)."""
    if not _trim_pending.acquire(blocking=False):
        return

    def run() -> None:
        try:
            release_free_memory()
        finally:
            _trim_pending.release()

    threading.Thread(target=run, name="covidscan-malloc-trim", daemon=True).start()
