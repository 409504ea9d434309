"""The C allocator of a long-running serving process: large buffers go back to the system when freed.

glibc serves an allocation above its mmap threshold with its own ``mmap`` and unmaps it on ``free``;
smaller ones come from its heaps, which only shrink from the top. By default the threshold is
*dynamic*: freeing a mapped chunk raises it to that chunk's size (up to 32 MB). The service decodes
20 MB CT series and preprocesses them with many short-lived arrays of a few MB in several threads, so
after the first CT request those arrays land on the heaps, and the heaps' high-water mark creeps up
with fragmentation: the front worker grew from 0.68 to 1.47 GB in a 2-minute soak (issue 15). A
fixed threshold (``mallopt(M_MMAP_THRESHOLD)``, which also turns the dynamic adjustment off) keeps
every array of ``serve.mmap_threshold_mb`` or more mapped and returned on free: the same soak
then stays flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def pin_mmap_threshold(megabytes: float) -> bool:
    """Fix glibc's mmap threshold at ``megabytes`` for this process (0: leave glibc's dynamic default).

    Returns:
        True when the threshold was set; False on a C library without ``mallopt`` (e.g. musl, macOS)
        or with ``megabytes`` 0, where nothing changes.
    """
    if megabytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, int(megabytes * 1024 * 1024)))
    except (OSError, AttributeError):
        done = False
    if not done:
        log.info("mallopt(M_MMAP_THRESHOLD) not available; the C allocator keeps its defaults")
    return done
