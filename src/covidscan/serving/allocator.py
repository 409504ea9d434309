"""The C allocator of a long-running serving process: large buffers go back to the system when freed.

glibc serves an allocation above its mmap threshold with its own ``mmap`` and unmaps it on ``free``;
smaller ones come from its heaps, which only shrink from the top. By default the threshold is
*dynamic*: freeing a mapped chunk raises it to that chunk's size (up to 32 MB). The service decodes
20 MB CT series and preprocesses them with many short-lived arrays of a few MB in several threads, so
after the first CT request those arrays land on the heaps, and the heaps' high-water mark creeps up
with fragmentation: the front worker grew from 0.68 to 1.47 GB in a 2-minute soak (issue 15). A
fixed threshold (``mallopt(M_MMAP_THRESHOLD)``, which also turns the dynamic adjustment off) keeps
every buffer of ``serve.mmap_threshold_mb`` (128 kB) or more mapped and returned on free, and a cap on
glibc's per-thread arenas (``serve.malloc_arena_max``, 2) keeps the request threads from each holding
their own fragmented heap: the same soak then stays within what the requests in flight hold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8


def _mallopt(param: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(param, int(value)))
    except (OSError, AttributeError):
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
