"""Per-model HTML report (model card) and DVC-friendly metrics/plots files.

Everything here takes plain dicts, lists and paths, so the evaluate stage (and the registry, which
attaches the card to a model version) can call it without knowing how the numbers were made.

- :func:`write_metrics_json`: one flat JSON object ``{"test.f1": 0.96, ...}`` that ``dvc metrics show``
  reads; nested dicts are flattened with ``.``; NaN/inf become ``null`` (JSON has no NaN).
- :func:`write_curve_csv` / :func:`write_curve_json`: curves for ``dvc plots`` (CSV with a header, or
  JSON ``{name: [{x: .., y: ..}, ...]}``).
- :func:`write_model_card`: a self-contained HTML page with warnings at the top (e.g. a confound: the
  label named by the source), the research-use notice, intended use, data summary, a metrics table with
  CIs, figures (linked relative to the page, or embedded as base64), the source-shortcut table and the
  limitations. Every text value is HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from covidscan import RESEARCH_NOTICE, __version__
from covidscan.evaluation.curves import Curve, pr_points, roc_points

INTENDED_USE = (
    "Research only: studying automated COVID-19 detection on chest X-ray and CT. Not a medical device; "
    "not validated for clinical use; must not be used to diagnose, treat or triage patients."
)

DEFAULT_LIMITATIONS: tuple[str, ...] = (
    "Trained and tested on a hybrid of public datasets and (synthetic) hospital data; classes often "
    "come from different sources, so part of the performance may reflect the source, not the disease "
    "(see the source-shortcut probe).",
    "Test sets are small; the bootstrap intervals show how uncertain every index is.",
    "The operating threshold was fixed or chosen on validation data; other sites may need another one.",
    "Heatmaps (Grad-CAM) show where the model looked, not why; they are not lesion segmentations.",
)


# ------------------------------------------------------------------------------- DVC outputs
def _clean(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if type(value).__name__ == "bool_":  # numpy bool
        return bool(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(f):
        return None
    if isinstance(value, int) or (
        hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"
    ):
        return int(value)
    return f


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten nested dicts into one level: ``{"a": {"b": 1}} -> {"a.b": 1}``; values made JSON-safe.

    Args:
        metrics: nested mapping of numbers (numpy scalars allowed), strings or bools.
        prefix: key prefix.
        sep: key separator.

    Returns:
        The flat dict (NaN/inf -> None).
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name, sep))
        else:
            out[name] = _clean(value)
    return out


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_metrics_json(metrics: Mapping[str, Any], path: Path | str) -> Path:
    """Write metrics as one flat JSON object (``dvc metrics show`` format).

    Args:
        metrics: nested or flat mapping of numbers.
        path: the JSON file.

    Returns:
        The written path.
    """
    flat = flatten_metrics(metrics)
    return _write_atomic(
        Path(path), json.dumps(flat, indent=2, sort_keys=True, allow_nan=False) + "\n"
    )


def curve_rows(curve: Curve, kind: str) -> list[dict[str, float]]:
    """Rows of a grid curve for plotting.

    Args:
        curve: a grid curve.
        kind: ``"roc"`` (fpr, tpr, threshold) or ``"pr"`` (recall, precision, threshold).

    Returns:
        One dict per point; ROC rows include the (0, 0)/(1, 1) end points with threshold None.
    """
    if kind == "roc":
        fpr, tpr = roc_points(curve)
        thr = [None, *curve.thresholds[::-1].tolist(), None]
        return [
            {"fpr": float(f), "tpr": float(t), "threshold": th}
            for f, t, th in zip(fpr, tpr, thr, strict=True)
        ]
    if kind == "pr":
        recall, precision, thresholds = pr_points(curve)
        return [
            {"recall": float(r), "precision": float(p), "threshold": float(th)}
            for r, p, th in zip(recall, precision, thresholds, strict=True)
        ]
    raise ValueError(f"unknown curve kind {kind!r}; expected 'roc' or 'pr'")


def write_curve_csv(curve: Curve, kind: str, path: Path | str) -> Path:
    """Write a ROC or PR curve as CSV (``dvc plots`` with x=fpr,y=tpr or x=recall,y=precision).

    Args:
        curve: a grid curve.
        kind: ``"roc"`` or ``"pr"``.
        path: the CSV file.

    Returns:
        The written path.
    """
    rows = curve_rows(curve, kind)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def write_curve_json(curves: Mapping[str, tuple[Curve, str]], path: Path | str) -> Path:
    """Write several curves into one JSON file ``{name: [{...}, ...]}`` (``dvc plots`` format).

    Args:
        curves: name -> (curve, kind), e.g. {"roc": (curve, "roc"), "prc": (curve, "pr")}.
        path: the JSON file.

    Returns:
        The written path.
    """
    data = {name: curve_rows(curve, kind) for name, (curve, kind) in curves.items()}
    return _write_atomic(Path(path), json.dumps(data, indent=1) + "\n")


# -------------------------------------------------------------------------------- model card
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, int):
        return str(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "n/a" if not math.isfinite(f) else f"{f:.{digits}f}"


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(columns) if columns else list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in cols) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_table(metrics: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """rater -> index -> {point, low, high} as one table, one row per (rater, index)."""
    if not metrics:
        return "<p><em>none</em></p>"
    rows = []
    for rater, indices in metrics.items():
        for index, value in indices.items():
            if isinstance(value, Mapping):
                point, low, high = value.get("point"), value.get("low"), value.get("high")
            else:
                point, low, high = value, None, None
            ci = f"{_fmt(low)} – {_fmt(high)}" if low is not None and high is not None else "–"
            rows.append(
                f"<tr><td>{html.escape(str(rater))}</td><td>{html.escape(str(index))}</td>"
                f"<td>{_fmt(point)}</td><td>{ci}</td></tr>"
            )
    return (
        "<table><thead><tr><th>rater</th><th>index</th><th>value</th><th>95% CI</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _img(path: Path, page_dir: Path, embed: bool, caption: str) -> str:
    if embed:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        src = f"data:image/png;base64,{data}"
    else:
        src = Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix()
    alt = html.escape(caption, quote=True)
    return (
        f'<figure><img src="{html.escape(src, quote=True)}" alt="{alt}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


CSS = """
body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
.notice{border:2px solid #b00;background:#fee;padding:.6rem 1rem;font-weight:bold}
.warning{border:3px solid #c60;background:#fff3e0;padding:.6rem 1rem;font-weight:bold;font-size:1.1rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #bbb;padding:.2rem .5rem;text-align:left}
figure{display:inline-block;margin:.5rem;vertical-align:top}figure img{max-width:28rem}
figcaption{font-size:.85rem;color:#555}
"""


def write_model_card(
    path: Path | str,
    *,
    model_name: str,
    description: str = "",
    data_summary: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    figures: Mapping[str, Path | str] | None = None,
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    shortcut: Sequence[Mapping[str, Any]] | None = None,
    limitations: Sequence[str] = DEFAULT_LIMITATIONS,
    intended_use: str = INTENDED_USE,
    embed_figures: bool = False,
    extra: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> Path:
    """Write a model's HTML report / model card.

    Args:
        path: the HTML file.
        model_name: the model's name (e.g. "cnncf-student, experiment A").
        description: a paragraph on the model and how it was trained.
        data_summary: plain key -> value facts (e.g. {"test cases": 162, "positives": 62, ...}).
        metrics: rater (model, readers) -> index -> {"point", "low", "high"} (a
            :meth:`BootstrapResult.as_dict`) or a plain number.
        figures: caption -> PNG path (ROC, PR, boxplots, reliability, Grad-CAM overlays ...). Linked by
            a path relative to the page unless ``embed_figures``.
        tables: title -> rows (e.g. {"Thresholds": thresholds_table(...), "McNemar": [...]}).
        shortcut: rows of :func:`covidscan.explain.shortcut.shortcut_table`.
        limitations: bullet points.
        intended_use: the intended-use statement (research only by default).
        embed_figures: embed PNGs as base64 data URIs (a single self-contained file).
        extra: further key -> value facts (run id, params, data digest ...).
        warnings: sentences shown prominently at the top of the card, under the title (e.g. the
            confound warning of :func:`covidscan.explain.shortcut.confound_check`).

    Returns:
        The written path.

    Raises:
        FileNotFoundError: a figure does not exist.
    """
    path = Path(path)
    page_dir = path.parent
    page_dir.mkdir(parents=True, exist_ok=True)
    for caption, fig in (figures or {}).items():
        if not Path(fig).is_file():
            raise FileNotFoundError(f"model card figure {caption!r}: {fig} does not exist")
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Model card: {esc(model_name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Model card: {esc(model_name)}</h1>",
        *(f'<p class="warning" role="alert">Warning: {esc(w)}</p>' for w in warnings if w),
        f'<p class="notice">{esc(RESEARCH_NOTICE)}</p>',
        "<h2>Intended use</h2>",
        f"<p>{esc(intended_use)}</p>",
    ]
    if description:
        parts += ["<h2>Model</h2>", f"<p>{esc(description)}</p>"]
    parts += [
        "<h2>Data</h2>",
        _table([{"item": k, "value": v} for k, v in (data_summary or {}).items()]),
    ]
    parts += ["<h2>Metrics</h2>", _metrics_table(metrics or {})]
    for title, rows in (tables or {}).items():
        parts += [f"<h3>{esc(title)}</h3>", _table(rows)]
    if shortcut is not None:
        parts += [
            "<h2>Source-shortcut probe</h2>",
            "<p>How well the data source/centre can be predicted (cross-validated logistic regression, "
            "AUROC; 0.5 = chance). A value near the disease AUROC warns that the model may recognise "
            "the source rather than the disease.</p>",
            _table(shortcut, ["features", "target", "auroc", "n", "n_groups", "note"]),
        ]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [
            _img(Path(fig), page_dir, embed_figures, caption) for caption, fig in figures.items()
        ]
    parts += [
        "<h2>Limitations</h2>",
        "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in limitations) + "</ul>",
    ]
    facts = {
        "covidscan version": __version__,
        "generated (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
    }
    facts.update(extra or {})
    parts += ["<h2>Provenance</h2>", _table([{"item": k, "value": v} for k, v in facts.items()])]
    parts += [f'<p class="notice">{esc(RESEARCH_NOTICE)}</p>', "</body></html>"]
    return _write_atomic(path, "\n".join(parts) + "\n")
