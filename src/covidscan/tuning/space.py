"""The search space (``tune.space``): Optuna suggestions for one trial."""

from __future__ import annotations

from typing import Any

import optuna

from covidscan.config import Params
from covidscan.tuning.tuned import configured_values

INT_PARAMS = ("Q", "L", "M", "N", "ths_count")
LOG_PARAMS = ("lr", "weight_decay")
FLOAT_PARAMS = ("kd_alpha", "kd_temperature", "ths_sens")
KD_PARAMS = ("kd_alpha", "kd_temperature")


def suggest(trial: optuna.Trial, params: Params, *, with_kd: bool) -> dict[str, Any]:
    """Sample the trial's values; fixed parameters (``tune.space.fixed``, KD ones without teachers) keep
    their configured values and are not part of the search.

    Args:
        trial: the Optuna trial.
        params: the configuration (``tune.space`` and the configured values).
        with_kd: whether the objective distils (else alpha and T are not searched).

    Returns:
        name -> value for every search parameter (see :func:`covidscan.tuning.tuned.apply_values`).
    """
    space = params.tune.space
    values = configured_values(params)
    fixed = set(space.fixed) | (set() if with_kd else set(KD_PARAMS))
    for name in INT_PARAMS:
        if name not in fixed:
            lo, hi = getattr(space, name)
            values[name] = trial.suggest_int(name, lo, hi)
    for name in LOG_PARAMS:
        if name not in fixed:
            lo, hi = getattr(space, name)
            values[name] = trial.suggest_float(name, lo, hi, log=True)
    for name in FLOAT_PARAMS:
        if name not in fixed:
            lo, hi = getattr(space, name)
            values[name] = trial.suggest_float(name, lo, hi)
    if "width_scale" not in fixed:
        values["width_scale"] = trial.suggest_categorical("width_scale", list(space.width_scale))
    return values
