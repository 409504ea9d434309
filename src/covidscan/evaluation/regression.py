"""Regression indices (CNNRF, centre agreement) and the significance of a Pearson r.

Indices: MSE, RMSE, MAE, R^2 = 1 - SS_res / SS_tot (``y_true`` is the reference) and Pearson r.
For 2D input (n cases x k indicators), "pooled" pools every (true, predicted) pair (n k pairs) and
"per indicator" takes one column at a time. Pooled MSE/MAE equal scikit-learn's uniform average;
pooled R^2 is ``r2_score(y.ravel(), p.ravel())`` (not the mean of the per-column R^2).

Significance (:func:`indicator_significance`): each indicator's r is tested with n = the number of
cases (its own pairs), as the paper does; the pooled r is reported separately under ``pooled`` with
its own n = cases x indicators (its pairs are not independent: k of them come from each case, so its
"significance" is optimistic and is no substitute for the per-indicator test).

Critical r: the smallest |r| significant at level ``alpha`` (two-sided) for ``n`` pairs, from the
t-test of a correlation with ``n - 2`` degrees of freedom: ``r_crit = t / sqrt(n - 2 + t^2)`` with
``t = t_{1 - alpha/2, n-2}``. The paper's critical value 0.6524 at alpha = 0.001 is the table value
for 20 degrees of freedom, i.e. n = 22 pairs (n = 20 pairs gives 0.6788); its 20 CNNRF test cases were
apparently looked up as degrees of freedom. The reported ratio 0.8274 / 0.6524 = 1.27.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from covidscan.errors import DataError

REGRESSION_INDICES: tuple[str, ...] = ("mse", "rmse", "mae", "r2", "r")


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise DataError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    if t.size == 0:
        raise DataError("regression indices need at least one pair")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise DataError("regression indices: NaN or infinite values")
    return t, p


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either variable is constant or there are fewer than 2 pairs.

    Args:
        x: first variable, shape (n,).
        y: second variable, shape (n,).

    Returns:
        r in [-1, 1] or NaN.
    """
    a = np.asarray(x, dtype=float).ravel()
    b = np.asarray(y, dtype=float).ravel()
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    if den == 0:
        return float("nan")
    return float(np.clip((a @ b) / den, -1.0, 1.0))


def regression_indices(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R^2 and Pearson r of pooled pairs.

    R^2 is NaN when ``y_true`` is constant (SS_tot = 0); r is NaN when either side is constant.

    Args:
        y_true: reference values, any shape.
        y_pred: predictions, the same shape.

    Returns:
        ``{"mse", "rmse", "mae", "r2", "r", "n"}``.
    """
    t, p = _pair(y_true, y_pred)
    t, p = t.ravel(), p.ravel()
    err = p - t
    mse = float(np.mean(err**2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "r": pearson_r(t, p),
        "n": int(t.size),
    }


POOLED = "pooled"


def regression_report(
    y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Indices pooled over every pair and per indicator (column) of an (n, k) prediction.

    Args:
        y_true: reference values, shape (n, k) (or (n,) for one indicator).
        y_pred: predictions, same shape.
        names: the k indicator names (default "0".."k-1").

    Returns:
        ``{"pooled": indices, name_1: indices, ...}`` (pooled ``n`` = n k pairs, per-indicator ``n`` = n).
    """
    t, p = _pair(y_true, y_pred)
    if t.ndim == 1:
        t, p = t[:, None], p[:, None]
    k = t.shape[1]
    names = list(names) if names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise DataError(f"{len(names)} indicator names for {k} columns")
    if POOLED in names:
        raise DataError(f"an indicator may not be called {POOLED!r} (the pooled indices' key)")
    out = {POOLED: regression_indices(t, p)}
    for j, name in enumerate(names):
        out[name] = regression_indices(t[:, j], p[:, j])
    return out


def critical_r(n: int, alpha: float = 0.001) -> float:
    """Critical |r| of a two-sided test at level ``alpha`` for ``n`` pairs.

    Args:
        n: number of pairs (> 2).
        alpha: significance level (``EvaluateConfig.critical_alpha``).

    Returns:
        ``t / sqrt(n - 2 + t^2)`` with ``t`` the ``1 - alpha/2`` quantile of Student's t, ``n - 2`` df.
    """
    if n <= 2:
        raise DataError(f"critical r needs more than 2 pairs, got {n}")
    df = n - 2
    t = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    return t / math.sqrt(df + t * t)


def correlation_significance(r: float, n: int, alpha: float = 0.001) -> dict[str, float | bool]:
    """Compare a Pearson r with the critical r (the paper's "r = 1.27 x critical").

    Args:
        r: the observed correlation.
        n: number of pairs it was computed from.
        alpha: significance level.

    Returns:
        ``{"r", "n", "alpha", "r_critical", "ratio", "significant", "p_value"}`` where ``ratio`` is
        ``|r| / r_critical``, ``significant`` is ``|r| > r_critical`` and ``p_value`` the two-sided
        t-test p-value (as ``scipy.stats.pearsonr``).
    """
    r_crit = critical_r(n, alpha)
    df = n - 2
    if abs(r) >= 1.0:
        p_value = 0.0
    else:
        t = r * math.sqrt(df / (1.0 - r * r))
        p_value = float(2.0 * stats.t.sf(abs(t), df))
    return {
        "r": float(r),
        "n": int(n),
        "alpha": float(alpha),
        "r_critical": r_crit,
        "ratio": abs(r) / r_crit,
        "significant": bool(abs(r) > r_crit),
        "p_value": p_value,
    }


def indicator_significance(report: dict[str, dict[str, float]], alpha: float = 0.001) -> dict[str, dict[str, Any]]:
    """Each indicator's r against the critical r for n = cases, and the pooled r separately, labelled.

    Args:
        report: :func:`regression_report` of an (n cases, k indicators) prediction.
        alpha: significance level (``EvaluateConfig.critical_alpha``; the paper's 0.001).

    Returns:
        ``{indicator: correlation_significance(r, n_cases, alpha), ..., "pooled": {...}}``; the pooled
        entry uses n = cases x indicators and carries ``"pooled": True``. With 2 cases or fewer no critical
        r exists: the entry has ``significant`` False, NaN ``r_critical``/``ratio``/``p_value`` and a
        ``note`` saying why.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, ind in report.items():
        key = POOLED if name == POOLED else name
        r, n = float(ind["r"]), int(ind["n"])
        if n > 2:
            entry: dict[str, Any] = dict(correlation_significance(r, n, alpha))
        else:
            nan = float("nan")
            entry = {"r": r, "n": n, "alpha": float(alpha), "r_critical": nan, "ratio": nan, "significant": False, "p_value": nan,
                     "note": f"no critical r for {n} pair(s): the test needs more than 2"}  # fmt: skip
        if key == POOLED:
            entry["pooled"] = True
        out[key] = entry
    pooled = out.pop(POOLED, None)
    if pooled is not None:
        out[POOLED] = pooled  # last, after the indicators
    return out
