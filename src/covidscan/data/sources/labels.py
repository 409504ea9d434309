"""Mapping the label text of public sets onto the four classes (normal, pneumonia, covid19, influenza).

Order of precedence: the source's ``label_map`` option (exact, case-insensitive), then the class
names themselves, then keyword rules on the text (CCD's hierarchical findings such as
``Pneumonia/Viral/COVID-19`` included). Text that matches nothing maps to ``None`` and the record is
skipped (counted as ``unmapped_label``), never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from covidscan.config import CLASSES

_COVID = ("covid", "sars-cov-2", "sarscov2", "2019-ncov", "ncov")
_INFLUENZA = ("influenza", "flu", "h1n1")
_NORMAL = ("no finding", "normal", "healthy", "no lung opacity")
# Non-COVID pneumonias: the pathogens and labels CCD, RSNA and Kaggle-style folders use.
_PNEUMONIA = (
    "pneumonia", "bacterial", "viral", "fungal", "streptococcus", "klebsiella", "legionella", "mycoplasma",
    "chlamydophila", "pneumocystis", "pcp", "e.coli", "e. coli", "staphylococcus", "mrsa", "nocardia",
    "aspergillosis", "varicella", "herpes", "mers", "sars", "lipoid", "aspiration", "lung opacity", "cap", "ards",
)


def _has(text: str, words: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", text) for w in words)


def map_label(text: str | None, label_map: Mapping[str, str] | None = None) -> str | None:
    """The class for a source's label text, or ``None`` when it cannot be mapped.

    Args:
        text: the source's label or finding (``"COVID-19"``, ``"Pneumonia/Bacterial/Klebsiella"``,
            ``"No Finding"``, ``"CT_COVID"``, ...).
        label_map: the source's explicit mapping (raw text -> class), checked first.

    Examples:
        >>> map_label("Pneumonia/Viral/COVID-19")
        'covid19'
        >>> map_label("Pneumonia/Viral/Influenza")
        'influenza'
        >>> map_label("Klebsiella")
        'pneumonia'
    """
    if text is None:
        return None
    raw = str(text).strip()
    if label_map:
        lowered = {str(k).strip().lower(): v for k, v in label_map.items()}
        if raw.lower() in lowered:
            return lowered[raw.lower()]
    low = raw.lower().replace("_", " ")
    if raw in CLASSES:
        return raw
    if low in ("non covid", "noncovid", "ct noncovid", "todo", "unknown", ""):
        return None  # not specific enough: give an explicit label_map entry
    if _has(low, _COVID):
        return "covid19"
    if _has(low, _INFLUENZA):
        return "influenza"
    if _has(low, _NORMAL):
        return "normal"
    if _has(low, _PNEUMONIA) or low.startswith("pneumonia"):
        return "pneumonia"
    return None


UNKNOWN_LABEL_MAX_CHARS = 60


def unknown_label_reason(text: object) -> str:
    """The quarantine reason for label text nothing maps: ``unknown label '<text>'``.

    The text is a source's label vocabulary, not a header value; it is still cleaned for logs and
    tables: control characters become spaces, whitespace is collapsed, quotes are dropped, and it is
    cut to :data:`UNKNOWN_LABEL_MAX_CHARS` characters (``...`` marks a cut).

    Examples:
        >>> unknown_label_reason("  Tuberculosis ")
        "unknown label 'Tuberculosis'"
    """
    clean = " ".join("".join(c if c.isprintable() else " " for c in str(text)).replace("'", "").split())
    if len(clean) > UNKNOWN_LABEL_MAX_CHARS:
        clean = clean[: UNKNOWN_LABEL_MAX_CHARS - 3] + "..."
    return f"unknown label '{clean}'"


def check_label_map(label_map: object, where: str) -> dict[str, str]:
    """Validate a ``label_map`` option: a mapping of text -> one of the four classes."""
    from covidscan.errors import ConfigError

    if not isinstance(label_map, Mapping):
        raise ConfigError(f"{where}: expected a mapping of source label -> class, got {type(label_map).__name__}")
    bad = {k: v for k, v in label_map.items() if v not in CLASSES}
    if bad:
        key = next(iter(bad))
        raise ConfigError(f"{where}.{key}: '{bad[key]}' is not a class; expected one of {', '.join(CLASSES)}")
    return {str(k): str(v) for k, v in label_map.items()}
