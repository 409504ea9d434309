"""The registry promotion gate: does a challenger model replace the champion? (framework-free)

Both models are scored on the *same* test set (an experiment's test part). A classifier challenger
passes when

* the lower bound of the bootstrap CI of its AUROC is at least the champion's point AUROC minus
  ``RegistryConfig.auroc_margin`` (it is not credibly worse), and
* at its own operating threshold (chosen on validation data and stored on its model card) its
  sensitivity is at least ``RegistryConfig.min_sensitivity`` and its specificity at least
  ``RegistryConfig.min_specificity`` (a model calling everyone positive has sensitivity 1 and fails).

Without a champion, the first model becomes champion when it meets both floors and its AUROC
CI lies above chance (``first_min_auroc``). A challenger whose Control Gate Block never opened in training
(``model.card.gate_opened`` False: stage II and the main head untrained) is refused before any scoring,
with that reason. A regressor
(CNNRF) passes when the upper bound of the bootstrap CI of its MSE is at most the champion's point MSE
plus ``mse_margin``; both are scored on the challenger's scale (its card's ``target_range``; the
champion's outputs are de-normalised with its own range first), and a regressor without its range is
refused with :class:`covidscan.models.card.MissingTargetRange`. :class:`GateDecision` carries every
figure used, so it can be written as tags on the model version
(:func:`covidscan.tracking.registry.record_decision`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from covidscan.config import RegistryConfig
from covidscan.errors import DataError


@dataclass(frozen=True)
class GateDecision:
    """The outcome of the gate and its figures.

    Attributes:
        promote: whether the challenger becomes champion.
        reason: one sentence saying why.
        metric: ``auroc`` (classifiers) or ``mse`` (regressors).
        challenger: the challenger's figures (point, CI bounds, sensitivity, threshold, n).
        champion: the champion's figures (empty when there is none).
        rule: the thresholds applied (margin, floor).
        notes: facts recorded with the decision that do not decide it (e.g. the test set's confound
            warning, :func:`covidscan.explain.shortcut.confound_check`).
    """

    promote: bool
    reason: str
    metric: str
    challenger: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] = field(default_factory=dict)
    rule: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def as_tags(self, prefix: str = "gate") -> dict[str, str]:
        """Flat string tags, e.g. ``gate.decision = promoted``, ``gate.challenger.auroc_low = 0.91``."""
        tags = {f"{prefix}.decision": "promoted" if self.promote else "kept champion", f"{prefix}.reason": self.reason,
                f"{prefix}.metric": self.metric}  # fmt: skip
        for part in ("challenger", "champion", "rule"):
            for key, value in getattr(self, part).items():
                tags[f"{prefix}.{part}.{key}"] = f"{value:.6g}" if isinstance(value, float) else str(value)
        if self.notes:
            tags[f"{prefix}.notes"] = " | ".join(self.notes)
        return tags

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _binary_figures(y: np.ndarray, scores: np.ndarray, threshold: float, cfg: RegistryConfig) -> dict[str, float]:
    from covidscan.evaluation.bootstrap import bootstrap_auroc
    from covidscan.evaluation.metrics import indices_at_threshold

    res = bootstrap_auroc(y, scores, n_resamples=cfg.bootstrap, seed=cfg.seed, level=cfg.ci_level)
    ind = indices_at_threshold(y, scores, threshold)
    return {"auroc": res.point, "auroc_low": res.low, "auroc_high": res.high, "sensitivity": float(ind["sensitivity"]),
            "specificity": float(ind["specificity"]), "threshold": float(threshold), "n": int(y.size), "n_positive": int(y.sum())}  # fmt: skip


def classifier_gate(
    y_true: np.ndarray,
    challenger_scores: np.ndarray,
    challenger_threshold: float,
    cfg: RegistryConfig,
    champion_scores: np.ndarray | None = None,
    champion_threshold: float = 0.5,
) -> GateDecision:
    """Apply the gate to two classifiers scored on the same test cases.

    Args:
        y_true: labels 0/1 of the test cases.
        challenger_scores: the challenger's positive-class scores, aligned with ``y_true``.
        challenger_threshold: the challenger's operating threshold (its model card).
        cfg: margin, floor and bootstrap settings.
        champion_scores: the champion's scores on the same cases, or None when there is no champion.
        champion_threshold: the champion's operating threshold.

    Raises:
        DataError: misaligned arrays, or a test set without both classes (no AUROC).
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(challenger_scores, dtype=float)
    if s.shape != y.shape or (champion_scores is not None and np.shape(champion_scores) != y.shape):
        raise DataError(f"promotion gate: {y.size} labels but scores of shape {s.shape} / {np.shape(champion_scores)}")
    if not 0 < y.sum() < y.size:
        raise DataError(f"promotion gate: the test set needs both classes to compare AUROC ({int(y.sum())} positive of {y.size})")
    rule = {"auroc_margin": cfg.auroc_margin, "min_sensitivity": cfg.min_sensitivity, "min_specificity": cfg.min_specificity,
            "ci_level": cfg.ci_level, "bootstrap": float(cfg.bootstrap)}  # fmt: skip
    ch = _binary_figures(y, s, challenger_threshold, cfg)
    sens_ok = ch["sensitivity"] >= cfg.min_sensitivity
    spec_ok = ch["specificity"] >= cfg.min_specificity
    floors = (f"at threshold {ch['threshold']:.4f}: sensitivity {ch['sensitivity']:.4f} {'>=' if sens_ok else '<'} floor {cfg.min_sensitivity:.4f}, "
              f"specificity {ch['specificity']:.4f} {'>=' if spec_ok else '<'} floor {cfg.min_specificity:.4f}")  # fmt: skip
    if champion_scores is None:
        above_chance = bool(np.isfinite(ch["auroc_low"]) and ch["auroc_low"] > cfg.first_min_auroc)
        reason = f"first model: AUROC CI low {ch['auroc_low']:.4f} {'>' if above_chance else '<='} {cfg.first_min_auroc:.4f}; {floors}"
        return GateDecision(sens_ok and spec_ok and above_chance, reason, "auroc", ch, {}, rule)
    cp = _binary_figures(y, np.asarray(champion_scores, dtype=float), champion_threshold, cfg)
    bar = cp["auroc"] - cfg.auroc_margin
    auroc_ok = bool(np.isfinite(ch["auroc_low"]) and ch["auroc_low"] >= bar)
    parts = [f"AUROC CI low {ch['auroc_low']:.4f} {'>=' if auroc_ok else '<'} champion {cp['auroc']:.4f} - margin {cfg.auroc_margin:.4f}", floors]
    return GateDecision(auroc_ok and sens_ok and spec_ok, "; ".join(parts), "auroc", ch, cp, rule)


def _mse_figures(truth: np.ndarray, pred: np.ndarray, cfg: RegistryConfig) -> dict[str, float]:
    from covidscan.evaluation.bootstrap import bootstrap

    def mse(t: np.ndarray, p: np.ndarray) -> np.ndarray:
        return ((t - p) ** 2).reshape(t.shape[0], -1).mean(-1) if t.ndim == 3 else float(((t - p) ** 2).mean())

    res = bootstrap(mse, truth, pred, n_resamples=cfg.bootstrap, seed=cfg.seed, level=cfg.ci_level, vectorised=True)["value"]
    return {"mse": res.point, "mse_low": res.low, "mse_high": res.high, "n": int(truth.shape[0])}


def regressor_gate(truth: np.ndarray, challenger_pred: np.ndarray, cfg: RegistryConfig, champion_pred: np.ndarray | None = None) -> GateDecision:
    """The gate for regressors (CNNRF): CI upper bound of the challenger's MSE vs the champion's MSE + margin.

    Args:
        truth: (n, k) normalised targets.
        challenger_pred: (n, k) predictions.
        cfg: ``mse_margin`` and bootstrap settings.
        champion_pred: the champion's predictions on the same cases, or None (first model: promoted).
    """
    t = np.asarray(truth, dtype=float)
    p = np.asarray(challenger_pred, dtype=float)
    if t.shape != p.shape or t.ndim != 2 or t.shape[0] == 0:
        raise DataError(f"promotion gate: targets {t.shape} and predictions {p.shape} must be equal (n, k), n > 0")
    rule = {"mse_margin": cfg.mse_margin, "ci_level": cfg.ci_level, "bootstrap": float(cfg.bootstrap)}
    ch = _mse_figures(t, p, cfg)
    if champion_pred is None:
        return GateDecision(True, "first model", "mse", ch, {}, rule)
    cp = _mse_figures(t, np.asarray(champion_pred, dtype=float), cfg)
    ok = ch["mse_high"] <= cp["mse"] + cfg.mse_margin
    reason = f"MSE CI high {ch['mse_high']:.5f} {'<=' if ok else '>'} champion {cp['mse']:.5f} + margin {cfg.mse_margin:.5f}"
    return GateDecision(bool(ok), reason, "mse", ch, cp, rule)


# ------------------------------------------------------------------------ registered models
@dataclass
class GateData:
    """The tables the gate scores models on (as the evaluate stage reads them).

    Attributes:
        processed_dir: ``data/processed`` (the preprocessed arrays and ``index.parquet``).
        splits: ``data/splits/splits.parquet`` as a frame.
        index: ``data/processed/index.parquet``.
        manifest: ``data/interim/ingest/manifest.parquet``.
        clinical: ``clinical.parquet`` (regressors only; may be empty).
    """

    processed_dir: Any
    splits: Any
    index: Any
    manifest: Any
    clinical: Any = None


def _scores(model: Any, spec: Any, data: GateData, pre: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    from covidscan.evaluation.experiment import class_scores, run_model, test_records, usable_records

    records = usable_records(test_records(spec, data.splits, data.index, data.manifest), model.card.input_spec.kind)
    outs = run_model(model, records, data.processed_dir, pre)
    if model.card.task == "regression":
        return outs.outputs, np.zeros(0), records
    return class_scores(outs.outputs, list(model.card.class_labels), spec.positive, spec.negative), records["y"].to_numpy(), records


def gate_models(challenger: Any, champion: Any | None, spec: Any, data: GateData, params: Any,
                model_names: tuple[str, str] = ("challenger", "champion")) -> GateDecision:  # fmt: skip
    """Score two loaded models on an experiment's test set and apply the gate.

    Args:
        challenger: the new model (``covidscan.models.zoo.load_model``).
        champion: the current champion, or None.
        spec: the gating experiment (``params.experiments[...]``).
        data: the tables.
        params: the whole config (``preprocess``, ``registry``).
        model_names: how errors name the challenger and the champion (e.g. their registry versions).

    Raises:
        MissingTargetRange: a regressor without its card's ``target_range``.
    """
    cfg: RegistryConfig = params.registry
    pre = params.preprocess
    if getattr(challenger.card, "gate_opened", None) is False:
        return GateDecision(
            False,
            "the challenger's Control Gate Block never opened in training (stage II and the main head untrained); refused",
            "auroc" if challenger.card.task == "classification" else "mse",
            {"gate_opened": 0.0},
            {},
            {"gate_opened_required": 1.0},
        )
    if challenger.card.task == "regression":
        rng = challenger.card.require_target_range(model_names[0])
        champion_rng = champion.card.require_target_range(model_names[1]) if champion is not None else None
        if champion_rng is not None and champion_rng.names != rng.names:
            raise DataError(f"promotion gate: {model_names[1]} predicts {list(champion_rng.names)}, {model_names[0]} {list(rng.names)}")
        if data.clinical is None or len(data.clinical) == 0:
            raise DataError("promotion gate: a regressor needs the clinical table (clinical.parquet)")
        pred, _, records = _scores(challenger, spec, data, pre)
        table = data.clinical.set_index("record_id")
        keep = records["record_id"].isin(table.index).to_numpy()
        truth = rng.normalise(table.loc[records["record_id"][keep], list(rng.names)].to_numpy(float))
        champ = None
        if champion is not None and champion_rng is not None:  # its outputs, in raw units, on the challenger's scale
            champ = rng.normalise(champion_rng.denormalise(_scores(champion, spec, data, pre)[0][keep]))
        return regressor_gate(truth, pred[keep], cfg, champ)
    scores, y, _ = _scores(challenger, spec, data, pre)
    if champion is None:
        return classifier_gate(y, scores, float(challenger.card.threshold), cfg)
    champ_scores, champ_y, _ = _scores(champion, spec, data, pre)
    if not np.array_equal(champ_y, y):
        raise DataError("promotion gate: the champion and the challenger take different test cases (input kinds differ)")
    return classifier_gate(y, scores, float(challenger.card.threshold), cfg, champ_scores, float(champion.card.threshold))


def confound_of_test_set(spec: Any, data: GateData, kind: str, warn_at: float) -> dict[str, Any]:
    """The confound check of an experiment's test cases (those a model of input ``kind`` takes).

    See :func:`covidscan.explain.shortcut.confound_check`: the label purity by source and by centre.
    """
    from covidscan.evaluation.experiment import test_records, usable_records
    from covidscan.explain.shortcut import confound_check

    records = usable_records(test_records(spec, data.splits, data.index, data.manifest), kind)
    groupings = {c: records[c].astype(str).to_numpy() for c in ("source", "centre") if c in records}
    return confound_check(records["label"].astype(str).to_numpy(), groupings, warn_at)


def gate_registered(registered_name: str, version: str | int | None, params: Any, data: GateData, card_path: Any = None,
                    force: bool = False) -> tuple[str, GateDecision]:  # fmt: skip
    """The register stage's step for one registered model: challenger alias, gate, tags, champion move.

    The experiment's test set is also checked for a confound (the label named by the source or centre for
    at least ``evaluate.confound_purity`` of the cases): the warning is recorded, not a refusal, as a note
    on the decision (``gate.notes``), the ``covidscan.confound`` tag and the version's description.

    Args:
        registered_name: e.g. ``covidscan-student-xray``; ``params.registry.gates`` names its experiment.
        version: the version to consider; None takes the newest.
        params: the whole config.
        data: the tables.
        card_path: the evaluation's model card to attach (``reports/evaluate/<exp>/model_card.html``).
        force: promote without the gate (an operator's decision; recorded as such).

    Returns:
        (the version considered, the decision).

    Raises:
        DataError / ConfigError: no such model or version, or no gating experiment for it.
    """
    import json
    import tempfile
    from pathlib import Path

    from covidscan.errors import ConfigError
    from covidscan.models.zoo import load_model
    from covidscan.tracking import registry as reg

    cfg: RegistryConfig = params.registry
    exp = cfg.gates.get(registered_name)
    if exp is None or exp not in params.experiments:
        raise ConfigError(f"registry.gates: no experiment (among params.yaml experiments) gates {registered_name!r}")
    mv = reg.latest_version(registered_name) if version is None else reg.resolve_version(registered_name, version)
    if mv is None:
        raise DataError(f"MLflow registry: {registered_name!r} has no version")
    ver = str(mv.version)
    reg.set_alias(registered_name, cfg.challenger_alias, ver)
    champion_mv = reg.version_by_alias(registered_name, cfg.champion_alias)
    if champion_mv is not None and str(champion_mv.version) == ver:
        decision = GateDecision(True, "already champion", "none")
        return ver, decision
    with tempfile.TemporaryDirectory(prefix="covidscan-gate-") as tmp:
        reg.export_checkpoint(registered_name, ver, Path(tmp) / "challenger.pt")
        challenger = load_model(Path(tmp) / "challenger.pt")
        confound = confound_of_test_set(params.experiments[exp], data, challenger.card.input_spec.kind, params.evaluate.confound_purity)
        champion = None
        if champion_mv is not None:
            reg.export_checkpoint(registered_name, champion_mv.version, Path(tmp) / "champion.pt")
            champion = load_model(Path(tmp) / "champion.pt")
        if force:
            decision = GateDecision(True, "promoted by an operator without the gate (--force)", "none")
        else:
            where = (f"{registered_name} v{ver}", f"{registered_name} v{champion_mv.version} (champion)" if champion_mv is not None else "")
            decision = gate_models(challenger, champion, params.experiments[exp], data, params, where)
    if confound["warning"]:
        decision = replace(decision, notes=(*decision.notes, confound["warning"]))
    tags = decision.as_tags()
    tags["gate.experiment"] = exp
    tags[reg.CONFOUND_TAG] = confound["warning"] or "none"
    tags["gate.confound.by"], tags["gate.confound.purity"] = str(confound["by"]), f"{confound['purity']:.4g}"
    tags["gate.champion_version"] = "" if champion_mv is None else str(champion_mv.version)
    if not (mv.tags or {}).get(reg.PREPROCESS_TAG):  # a version registered without it: what the gate scored with
        tags[reg.PREPROCESS_TAG] = json.dumps(params.preprocess.model_dump(mode="json"), sort_keys=True)
    verdict = "promoted" if decision.promote else "champion kept"
    description = f"Gate on experiment {exp}: {verdict} ({decision.reason})." + (f" {confound['warning']}." if confound["warning"] else "")
    reg.record_decision(registered_name, ver, tags, card_path, description=description)
    if decision.promote:
        reg.move_champion(registered_name, ver, cfg.champion_alias, cfg.previous_alias)
    return ver, decision
