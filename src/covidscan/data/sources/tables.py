"""Reading the small CSV tables of a layout (labels, metadata) with clear errors."""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import pandas as pd

from covidscan.errors import DataError

RTPCR_VALUES = {"positive": "positive", "pos": "positive", "y": "positive", "yes": "positive", "1": "positive",
                "true": "positive", "negative": "negative", "neg": "negative", "n": "negative", "no": "negative",
                "0": "negative", "false": "negative"}


def read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """Read a CSV as strings ('' for empty cells) and check its required columns.

    Raises:
        DataError: missing file, unreadable, or a required column absent (named).
    """
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: {what} is not a readable CSV ({type(err).__name__})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: {what} lacks column '{missing[0]}' (required: {', '.join(required)})")
    return df


def relative_key(text: str) -> str:
    """A normalised relative path key ('a/b/c'); raises ValueError for absolute or escaping paths."""
    p = PurePosixPath(str(text).strip().replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise ValueError("path is absolute or leaves the source folder")
    return "/".join(part for part in p.parts if part not in ("", "."))


def to_rtpcr(text: str) -> str:
    """'positive' / 'negative' / '' from the various spellings sources use."""
    return RTPCR_VALUES.get(str(text).strip().lower(), "")


def to_float(text: str) -> float:
    """A float, NaN for an empty or unparsable cell."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return math.nan
    return value


def to_int(text: str, default: int = 0) -> int:
    """An int (from '3' or '3.0'), ``default`` for an empty or unparsable cell."""
    value = to_float(text)
    return default if math.isnan(value) else int(value)
