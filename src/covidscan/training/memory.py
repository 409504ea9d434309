"""Peak memory of the training process (reported in the training result)."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``getrusage``; DataLoader workers not included)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    """Current resident set size of this process, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / (1024 * 1024)
