"""The model against human readers: McNemar's test on paired decisions and the readers' own indices.

McNemar's test compares two raters on the same cases through the discordant pairs of a 2x2 table.
By default (``on="correctness"``, the usual comparison of two classifiers) the table crosses "model
correct" with "reader correct", so ``b`` = cases the model gets right and the reader wrong, ``c`` =
the reverse. ``on="calls"`` crosses the positive calls themselves (``b`` = model positive, reader
negative), a test of whether the two call positive equally often.

The p-value is two-sided:

- exact (binomial) when ``b + c < exact_below`` (default 25): ``p = min(1, 2 * P[X <= min(b, c)])``
  with ``X ~ Binomial(b + c, 1/2)``; ``p = 1`` when ``b + c = 0``;
- otherwise the chi-square statistic with continuity correction ``(|b - c| - 1)^2 / (b + c)`` on one
  degree of freedom.

These are the formulas of ``statsmodels.stats.contingency_tables.mcnemar`` (``exact=True`` and
``exact=False, correction=True``), written out so statsmodels is not needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from covidscan.errors import DataError
from covidscan.evaluation.bootstrap import BootstrapResult, bootstrap_binary_indices
from covidscan.evaluation.metrics import binary_indices


@dataclass(frozen=True)
class McNemarResult:
    """Outcome of one McNemar test.

    Attributes:
        b: discordant pairs of the first kind (model correct / positive, reader not).
        c: discordant pairs of the second kind.
        statistic: ``min(b, c)`` for the exact test, the corrected chi-square otherwise.
        p_value: two-sided p-value.
        method: ``"exact"`` or ``"chi2_corrected"``.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict of the fields."""
        return {
            "b": self.b,
            "c": self.c,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "method": self.method,
        }


def mcnemar_test(b: int, c: int, exact_below: int = 25) -> McNemarResult:
    """McNemar's test from the two discordant counts (see the module docstring for the rule).

    Args:
        b: discordant pairs of the first kind.
        c: discordant pairs of the second kind.
        exact_below: use the exact binomial test when ``b + c`` is below this
            (``EvaluateConfig.mcnemar_exact_below``).

    Returns:
        The :class:`McNemarResult`.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    n = b + c
    if n < exact_below:
        k = min(b, c)
        p = 1.0 if n == 0 else min(1.0, 2.0 * float(stats.binom.cdf(k, n, 0.5)))
        return McNemarResult(b=b, c=c, statistic=float(k), p_value=p, method="exact")
    statistic = (abs(b - c) - 1.0) ** 2 / n
    return McNemarResult(
        b=b,
        c=c,
        statistic=float(statistic),
        p_value=float(stats.chi2.sf(statistic, 1)),
        method="chi2_corrected",
    )


def discordant_pairs(
    y_true: np.ndarray | None,
    model_pred: np.ndarray,
    reader_pred: np.ndarray,
    on: str = "correctness",
) -> tuple[int, int]:
    """The discordant counts (b, c) of the model and a reader on the same cases.

    Args:
        y_true: labels 0/1 (needed for ``on="correctness"``).
        model_pred: the model's calls 0/1.
        reader_pred: the reader's calls 0/1.
        on: ``"correctness"`` or ``"calls"``.

    Returns:
        (b, c).
    """
    m = np.asarray(model_pred).astype(bool)
    r = np.asarray(reader_pred).astype(bool)
    if m.shape != r.shape:
        raise DataError(f"model and reader calls differ in shape: {m.shape} vs {r.shape}")
    if on == "correctness":
        if y_true is None:
            raise ValueError("on='correctness' needs y_true")
        t = np.asarray(y_true).astype(bool)
        if t.shape != m.shape:
            raise DataError("y_true and the calls differ in shape")
        m, r = m == t, r == t
    elif on != "calls":
        raise ValueError(f"unknown McNemar table {on!r}; expected 'correctness' or 'calls'")
    return int(np.sum(m & ~r)), int(np.sum(~m & r))


def compare_with_readers(
    y_true: np.ndarray,
    model_pred: np.ndarray,
    reads: Mapping[str, np.ndarray],
    on: str = "correctness",
    exact_below: int = 25,
) -> dict[str, McNemarResult]:
    """McNemar's test of the model against each reader.

    Args:
        y_true: labels 0/1.
        model_pred: the model's calls 0/1 at its operating threshold.
        reads: reader name -> that reader's calls 0/1 on the same cases, same order.
        on: ``"correctness"`` (default) or ``"calls"``.
        exact_below: exact test when discordant pairs are fewer.

    Returns:
        Reader name -> result.
    """
    return {
        name: mcnemar_test(
            *discordant_pairs(y_true, model_pred, calls, on=on), exact_below=exact_below
        )
        for name, calls in reads.items()
    }


def reader_indices(
    y_true: np.ndarray,
    reads: Mapping[str, np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, BootstrapResult]]:
    """Each reader's binary indices with bootstrap CIs (paired with the model when the seed matches).

    Args:
        y_true: labels 0/1.
        reads: reader name -> calls 0/1.
        n_resamples: number of resamples.
        seed: generator seed; use the model's seed so all raters share the same resamples.
        level: CI level.

    Returns:
        Reader name -> index name -> result.
    """
    return {
        name: bootstrap_binary_indices(
            y_true, calls, n_resamples=n_resamples, seed=seed, level=level
        )
        for name, calls in reads.items()
    }


def reader_points(
    y_true: np.ndarray, reads: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Point indices of each reader, for drawing the readers on ROC/PR plots.

    Args:
        y_true: labels 0/1.
        reads: reader name -> calls 0/1.

    Returns:
        Reader name -> :func:`covidscan.evaluation.metrics.binary_indices` output.
    """
    return {name: binary_indices(y_true, calls) for name, calls in reads.items()}
