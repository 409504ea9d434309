"""A readable account of a validation run: which suite, which expectation, which column, examples."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Failure:
    """One failed expectation."""

    suite: str
    expectation: str  # e.g. "expect_column_values_to_be_in_set"
    description: str
    column: str  # the column (or columns) it checks; "" for table-level expectations
    unexpected: int | None  # offending rows (None for table-level expectations)
    total: int | None
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        count = f": {self.unexpected} of {self.total} rows" if self.unexpected is not None else ""
        col = f", column '{self.column}'" if self.column else ""
        text = f"[{self.suite}] {self.description} ({self.expectation}{col}){count}"
        if self.examples:
            text += "; e.g. " + " | ".join(self.examples)
        return text


@dataclass
class SuiteOutcome:
    """How one suite went."""

    name: str
    success: bool
    evaluated: int
    failed: int
    rows: int


@dataclass
class ValidationReport:
    """All suites of one :func:`covidscan.validation.validate` call."""

    suites: list[SuiteOutcome]
    failures: list[Failure]
    docs_index: Path | None = None
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return not self.failures and all(s.success for s in self.suites)

    def summary(self) -> str:
        """A few lines a person can act on."""
        head = (
            f"data validation {'passed' if self.success else 'FAILED'}: "
            f"{sum(s.evaluated for s in self.suites)} expectations in {len(self.suites)} suites, "
            f"{len(self.failures)} failed"
        )
        lines = [head]
        lines += ["  " + f.line() for f in self.failures]
        if self.docs_index is not None:
            lines.append(f"  data docs: {self.docs_index}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "seconds": round(self.seconds, 3),
            "docs_index": str(self.docs_index) if self.docs_index else None,
            "suites": [asdict(s) for s in self.suites],
            "failures": [asdict(f) for f in self.failures],
        }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return _fmt(value.item())
        except (ValueError, AttributeError):
            pass
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _exception_message(info: Any) -> str | None:
    if not info:
        return None
    if isinstance(info, dict) and "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    if isinstance(info, dict):  # keyed by metric
        for v in info.values():
            msg = _exception_message(v)
            if msg:
                return msg
    return None


def failure_from_result(suite: str, result: Any, max_examples: int) -> Failure:
    """Turn one failed GE ``ExpectationValidationResult`` into a :class:`Failure`."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    column = kwargs.get("column") or ",".join(
        str(c) for c in ([kwargs.get("column_A"), kwargs.get("column_B")] if "column_A" in kwargs else kwargs.get("column_list") or [])
        if c
    )
    res = dict(result.result or {})
    examples: list[str] = []
    exc = _exception_message(getattr(result, "exception_info", None))
    if exc:
        examples.append(f"error: {exc.splitlines()[0][:200]}")
    index_list = res.get("unexpected_index_list") or res.get("partial_unexpected_index_list")
    if index_list and isinstance(index_list[0], dict):
        for item in index_list[:max_examples]:
            examples.append(" ".join(f"{k}={_fmt(v)}" for k, v in item.items()))
    elif res.get("partial_unexpected_list"):
        examples.extend(_fmt(v) for v in res["partial_unexpected_list"][:max_examples])
    elif res.get("partial_missing_list"):
        examples.append("missing: " + ", ".join(_fmt(v) for v in res["partial_missing_list"][:max_examples]))
    elif isinstance(res.get("observed_value"), list) and "value_set" in kwargs:
        missing = sorted(set(kwargs["value_set"]) - set(res["observed_value"]))
        examples.append(f"missing: {', '.join(map(str, missing))}" if missing else f"observed {_fmt(res['observed_value'])}")
    elif "details" in res and res["details"]:
        examples.append(_fmt(res["details"]))
    elif "observed_value" in res:
        examples.append(f"observed {_fmt(res['observed_value'])}")
    unexpected = res.get("unexpected_count")
    total = res.get("element_count")
    return Failure(
        suite=suite,
        expectation=config.type,
        description=str(config.description or config.type),
        column=column or "",
        unexpected=int(unexpected) if unexpected is not None else None,
        total=int(total) if total is not None else None,
        examples=examples,
    )
