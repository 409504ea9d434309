"""Data-quality gates (Great Expectations 1.x suites defined in code).

``validate(...)`` runs every suite on the ingest outputs (and the split table), builds the GE data
docs and raises :class:`covidscan.errors.ValidationFailed` with a readable summary when anything
fails. Great Expectations is imported lazily (it is slow to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from covidscan.validation.report import ValidationReport
    from covidscan.validation.runner import make_context, validate

__all__ = ["ValidationReport", "make_context", "validate"]


def __getattr__(name: str) -> Any:
    if name in ("validate", "make_context"):
        from covidscan.validation import runner

        return getattr(runner, name)
    if name == "ValidationReport":
        from covidscan.validation.report import ValidationReport

        return ValidationReport
    raise AttributeError(name)
