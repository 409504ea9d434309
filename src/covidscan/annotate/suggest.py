"""Model-assisted pre-annotation: a registered 2D classifier's Grad-CAM/DBSCAN centres offered as
suggested boxes, and its uncertainty to order the worklist.

The model is the registry's champion (``--suggest-from models:/covidscan-student-xray@champion``),
loaded as the service loads it (:func:`covidscan.serving.bundle.bundle_from_registry`, then the
serving :class:`~covidscan.serving.predictor.Engine`): each case's ingest array takes the one
preprocessing path (:func:`covidscan.preprocess.model_inputs`), the engine gives the class
probabilities and the Grad-CAM heatmap with its DBSCAN centres (``evaluate.cam_threshold``,
``dbscan_eps``, ``dbscan_min_samples``). Each centre becomes a square box of ``box_fraction`` of the
image side (32/512, the middle of the seed's 16-64 px at 512; assumed) centred on it, in the record's
own pixels.

Suggestions are only shown: the browser draws them dashed and saves them only when the reader accepts
them (then they are the reader's boxes, flagged ``from_suggestion`` in the store). Uncertainty is
``1 - |2p - 1|`` for the positive-class probability ``p`` (1 at p = 0.5); cases the model cannot take
(another kind, e.g. a CT volume for an X-ray model) have no suggestion and sort last.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from covidscan.errors import ConfigError

if TYPE_CHECKING:
    from covidscan.annotate.cases import Case, CaseLibrary
    from covidscan.config import EvaluateConfig, Params
    from covidscan.serving.predictor import Engine

log = logging.getLogger(__name__)

# serving role -> the manifest kind its model takes
ROLE_CASE_KIND = {"xray": "xray", "ctslice": "ct_slice2d"}
BOX_FRACTION = 32 / 512


class Suggester:
    """Suggested boxes and uncertainty per case, from one served 2D model (computed once per case)."""

    def __init__(self, engine: Engine, role: str, box_fraction: float = BOX_FRACTION) -> None:
        if role not in ROLE_CASE_KIND:
            raise ConfigError(f"--suggest-from: a {role!r} model cannot suggest boxes; use an X-ray or CT-slice classifier")
        self.engine, self.role, self.box_fraction = engine, role, box_fraction
        self.case_kind = ROLE_CASE_KIND[role]
        self._cache: dict[str, tuple[float, list[dict]]] = {}
        self._lock = threading.Lock()

    def _run(self, library: CaseLibrary, case: Case) -> tuple[float, list[dict]]:
        from covidscan.preprocess import input_spec, model_inputs
        from covidscan.serving.predictor import _positive_index

        if case.kind != self.case_kind:
            return math.nan, []
        with self._lock:
            if case.record_id in self._cache:
                return self._cache[case.record_id]
            info = self.engine.infos[self.role]
            pre = info.preprocess_config()
            arr = model_inputs(library.array(case.record_id), case.kind, pre, what=case.record_id)[case.kind]
            x = input_spec(case.kind, pre).to_tensor(arr).numpy()
            probs = self.engine.forward(self.role, x[None])[0]
            p = float(probs[_positive_index(info.labels)])
            _, centres = self.engine.explain(self.role, x)
            half = self.box_fraction * max(case.rows, case.cols) / 2
            boxes = []
            for cx, cy in np.asarray(centres, dtype=float).reshape(-1, 2):
                x0, y0 = max(0.0, cx * case.cols - half), max(0.0, cy * case.rows - half)
                x1, y1 = min(float(case.cols), cx * case.cols + half), min(float(case.rows), cy * case.rows + half)
                if x1 > x0 and y1 > y0:
                    boxes.append({"slice_index": 0, "x0": round(x0, 2), "y0": round(y0, 2), "x1": round(x1, 2), "y1": round(y1, 2)})
            self._cache[case.record_id] = (p, boxes)
            return p, boxes

    def boxes(self, library: CaseLibrary, case: Case) -> list[dict]:
        """The suggested boxes of a case (empty when the model does not take its kind)."""
        return self._run(library, case)[1]

    def uncertainty(self, library: CaseLibrary, case: Case) -> float:
        """``1 - |2p - 1|``; -1 for a case the model cannot take (sorts last)."""
        p = self._run(library, case)[0]
        return -1.0 if math.isnan(p) else 1.0 - abs(2.0 * p - 1.0)


def from_bundle(folder: str | Path, explain: EvaluateConfig | None = None, device: str = "cpu") -> Suggester:
    """A suggester over a serving bundle folder (``model.pt`` + ``serving.json``)."""
    from covidscan.serving.bundle import read_bundle
    from covidscan.serving.predictor import Engine

    role = read_bundle(folder).role
    return Suggester(Engine({role: folder}, device, explain), role)


_URI = re.compile(r"^models:/(?P<name>[^@/]+)@(?P<alias>[\w.-]+)$")


def load_suggester(uri: str, params: Params) -> Suggester:
    """The suggester of a registered model, ``models:/<name>@<alias>`` (the MLflow registry)."""
    from covidscan.serving.bundle import ROLE_KINDS, bundle_from_registry
    from covidscan.tracking.registry import export_checkpoint

    m = _URI.match(uri)
    if not m:
        raise ConfigError(f"--suggest-from: expected models:/<name>@<alias>, got {uri!r}")
    folder = Path(tempfile.mkdtemp(prefix="covidscan-suggest-"))
    import torch

    export_checkpoint(m["name"], m["alias"], folder / "probe.pt")
    kind = torch.load(folder / "probe.pt", map_location="cpu", weights_only=True)["card"]["input_spec"]["kind"]
    (folder / "probe.pt").unlink()
    role = next((r for r in ROLE_CASE_KIND if kind in ROLE_KINDS[r]), None)
    if role is None:
        raise ConfigError(f"--suggest-from {uri}: a model taking {kind!r} cannot suggest boxes; use an X-ray or CT-slice classifier")
    bundle_from_registry(m["name"], m["alias"], role, folder / role, params.preprocess)
    log.info("suggestions from %s (%s)", uri, role)
    return from_bundle(folder / role, params.evaluate, params.run.device)
