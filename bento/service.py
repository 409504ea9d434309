"""covidscan BentoML services: X-ray and CT (a series or one slice) classification, clinical indicators, Grad-CAM explanations.

Two services (BentoML 1.4 ``@bentoml.service`` classes):

* ``Covidscan`` (the HTTP front, CPU): takes the uploads, checks and decodes them as untrusted input
  (:mod:`covidscan.serving.uploads`), preprocesses them with :mod:`covidscan.preprocess` (the path
  training used) and answers. Routes: ``/xray``, ``/ct``, ``/indicators``, ``/explain``, ``/info``;
  BentoML's own ``/healthz``, ``/livez``, ``/readyz`` and ``/metrics`` (Prometheus).
* ``CovidscanModels`` (``resources={"gpu": 1}``; CPU when there is no GPU): the networks. X-ray
  inference is an adaptive-batching API, so concurrent X-ray requests share forward passes.

The models are the MLflow registry's ``models:/<name>@champion`` versions, imported into the BentoML
model store by ``bento/import_models.py`` (which also writes ``bento/serving.json``: role -> BentoML
model tag, the roles with no registered model (``not_served``, reported by ``/info``), and the serving
limits). The CT-slice model (role ``ctslice``) is optional: without it the service starts and serves
the rest, and a single CT slice sent to ``/ct`` gets a 503 naming the missing model. ``bentoml build`` pins those tags, so a bento always serves the
versions it was built with; every response names the registered model and version.

Responses carry class probabilities, the operating threshold, the model name and version and the
research-use notice; never a DICOM header field. Errors are JSON ``{"error", "code", "status"}`` with
413 (too large), 415 (unsupported type), 422 (broken or unusable content), 429 (too many requests in
flight), 503 (model not served / overloaded), 504 (no answer within the traffic timeout:
:mod:`covidscan.serving.request_timeout`, which replaces BentoML's own timeout middleware).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from bentoml.models import BentoModel

from covidscan.config import DicomLimits, EvaluateConfig, ServeConfig
from covidscan.environment import quiet_telemetry
from covidscan.errors import DataError
from covidscan.serving import request_timeout
from covidscan.serving.allocator import release_free_memory_soon, tune_allocator
from covidscan.serving.body_guard import BodyGuard
from covidscan.serving.bundle import read_bundle
from covidscan.serving.predictor import (
    Engine,
    ModelUnavailable,
    Preparer,
    background_of,
    classification_response,
    explain_response,
    indicators_response,
)
from covidscan.serving.uploads import UploadError

quiet_telemetry()
log = logging.getLogger("covidscan.service")
request_timeout.install()  # BentoML's traffic.timeout timer kept each request (and its body) alive for the whole timeout

HERE = Path(__file__).resolve().parent
CONFIG_FILE = Path(os.environ.get("COVIDSCAN_BENTO_CONFIG", HERE / "serving.json"))
if not CONFIG_FILE.is_file():
    raise RuntimeError(f"{CONFIG_FILE}: not found; run `python bento/import_models.py` (make serve / make bento) first")
CONFIG: dict[str, Any] = json.loads(CONFIG_FILE.read_text())
SERVE = ServeConfig.model_validate(CONFIG.get("serve", {}))
LIMITS = DicomLimits.model_validate(CONFIG.get("limits", {}))
EXPLAIN = EvaluateConfig.model_validate(CONFIG.get("explain", {}))
DEVICE = os.environ.get("COVIDSCAN_DEVICE", "auto")
MODEL_ATTR = {role: f"model_{role}" for role in CONFIG.get("models", {})}


def _declare_models(cls: type) -> type:
    """Give a service class one ``BentoModel`` attribute per served role (pinned by ``bentoml build``)."""
    for role, tag in CONFIG.get("models", {}).items():
        setattr(cls, MODEL_ATTR[role], BentoModel(tag))
    return cls


def _bundles(instance: Any) -> dict[str, Path]:
    return {role: Path(getattr(instance, attr).path) for role, attr in MODEL_ATTR.items()}


# ----------------------------------------------------------------------------------- models
class CovidscanModels:
    """The networks on one device: ``COVIDSCAN_DEVICE`` (``auto``: GPU when present, else CPU; ``cuda``
    without a GPU: the service refuses to start, see :func:`covidscan.device.resolve_device`)."""

    def __init__(self) -> None:
        tune_allocator(SERVE.mmap_threshold_mb, SERVE.malloc_arena_max)
        self.engine = Engine(_bundles(self), DEVICE, EXPLAIN, device_setting="COVIDSCAN_DEVICE")

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=SERVE.max_batch_size, max_latency_ms=SERVE.max_latency_ms)
    def xray_probs(self, batch: np.ndarray) -> np.ndarray:
        """X-ray inputs (n, 3, H, W) -> class probabilities (n, C); requests are batched adaptively."""
        return self.engine.forward("xray", batch)

    @bentoml.api
    def forward(self, role: str, batch: np.ndarray) -> np.ndarray:
        """Inputs of one role -> probabilities (classifiers) or outputs (CNNRF)."""
        return self.engine.forward(role, batch)

    @bentoml.api
    def explain(self, role: str, x: np.ndarray) -> dict:
        """One input -> classification, Grad-CAM overlay (base64 PNG) and DBSCAN centres."""
        probs = self.engine.forward(role, x[None])[0]
        heat, centres = self.engine.explain(role, x)
        return explain_response(self.engine.infos[role], probs, heat, centres, background_of(role, x))

    @bentoml.api
    def device(self) -> str:
        return self.engine.device


CovidscanModels = bentoml.service(
    name="covidscan-models",
    resources={"gpu": 1},
    workers=1,
    traffic={"timeout": 300, "max_concurrency": max(SERVE.max_concurrency, SERVE.max_batch_size)},
)(_declare_models(CovidscanModels))


# ------------------------------------------------------------------------------------ front
class Covidscan:
    """The HTTP front: untrusted uploads in, JSON answers out."""

    models = bentoml.depends(CovidscanModels)

    def __init__(self) -> None:
        tune_allocator(SERVE.mmap_threshold_mb, SERVE.malloc_arena_max)  # before the request threads start
        infos = {role: read_bundle(path) for role, path in _bundles(self).items()}
        self.preparer = Preparer(infos, SERVE, LIMITS, CONFIG.get("not_served", {}))

    @bentoml.on_shutdown
    def close_decoders(self) -> None:
        """Stop the pre-started decoding workers with the service (no orphan processes)."""
        self.preparer.close()

    async def __is_ready__(self) -> bool:
        """Ready when the model service answers (its models are loaded)."""
        if not self.preparer.infos:
            return False
        try:
            await self.models.to_async.device()
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        return True

    def _answer(self, ctx: bentoml.Context, work) -> dict:
        try:
            return self._answer_unreleased(ctx, work)
        finally:
            if SERVE.malloc_trim:
                release_free_memory_soon()  # serve.malloc_trim: what this request's arrays needed goes back to the system (in the background)

    def _answer_unreleased(self, ctx: bentoml.Context, work) -> dict:
        """Run ``work``; map every user-causable problem to a 4xx/503 JSON body, anything else to 500."""
        try:
            return work()
        except UploadError as err:
            status, code, message = err.status, err.code, str(err)
        except ModelUnavailable as err:
            status, code, message = 503, "model_unavailable", str(err)
        except DataError as err:
            status, code, message = 422, "unusable_content", str(err)
        except bentoml.exceptions.ServiceUnavailable:
            status, code, message = 503, "overloaded", "the model service is overloaded; retry later"
        except Exception as err:  # noqa: BLE001 - a bad request must never take the worker down
            log.error("unexpected %s while answering a request", type(err).__name__)
            status, code, message = 500, "internal", "unexpected error; see the service log"
        log.info("answered %d (%s)", status, code)
        ctx.response.status_code = status
        return {"error": message, "code": code, "status": status}

    @bentoml.api(route="/xray")
    def xray(self, file: Path, ctx: bentoml.Context) -> dict:
        """Classify a chest X-ray: a DICOM (CR/DX), PNG or JPEG file (multipart field ``file``)."""

        def work() -> dict:
            x = self.preparer.xray_input(file)
            probs = self.models.xray_probs(x[None])
            return classification_response(self.preparer.info("xray"), np.asarray(probs)[0])

        return self._answer(ctx, work)

    @bentoml.api(route="/ct")
    def ct(self, files: list[Path], ctx: bentoml.Context, models: str = "", spacing_mm: float | None = None) -> dict:
        """Classify a CT: one slice (a PNG/JPEG, or one single-frame CT DICOM) or a series (one zip of a
        DICOM series, several slice files, a multi-frame file or one .npy in HU).

        ``models`` (default: by the upload): a slice goes to ``ctslice`` (the CT-slice student; 503 when
        it is not served), a series to ``ct2d`` (the 2D student on the dimension-normalised stack) and
        ``ct3d`` (CSAC-Net); comma-separated to choose (roles that are not served are skipped unless none
        is left). ``spacing_mm``: slice spacing of a .npy volume (needed by ``ct3d``).
        """

        def work() -> dict:
            inputs = self.preparer.ct_request(files, models, spacing_mm)
            results = {role: classification_response(self.preparer.info(role), np.asarray(self.models.forward(role=role, batch=x[None]))[0])
                       for role, x in inputs.items()}  # fmt: skip
            from covidscan import RESEARCH_NOTICE

            return {"results": results, "notice": RESEARCH_NOTICE}

        return self._answer(ctx, work)

    @bentoml.api(route="/indicators")
    def indicators(self, crops: list[Path], ctx: bentoml.Context) -> dict:
        """The five clinical indicators (CNNRF) from lesion crop images (PNG/JPEG/DICOM; mean over crops)."""

        def work() -> dict:
            x = self.preparer.crop_inputs(crops)
            return indicators_response(self.preparer.info("indicators"), np.asarray(self.models.forward(role="indicators", batch=x)))

        return self._answer(ctx, work)

    @bentoml.api(route="/explain")
    def explain(self, files: list[Path], ctx: bentoml.Context, model: str = "xray", spacing_mm: float | None = None) -> dict:
        """Grad-CAM overlay (base64 PNG) and DBSCAN centres for an X-ray (``model=xray``), a CT slice
        (``ctslice``) or a CT series (``ct3d``/``ct2d``)."""

        def work() -> dict:
            if model not in ("xray", "ctslice", "ct2d", "ct3d"):
                raise UploadError(f"model: expected xray, ctslice, ct2d or ct3d, got {model!r}", 422, "bad_parameter")
            if model in ("xray", "ctslice"):
                if len(files) != 1:
                    raise UploadError(f"explain: one {'X-ray' if model == 'xray' else 'CT slice'} file expected, got {len(files)}", 422, "bad_parameter")
                x = self.preparer.xray_input(files[0]) if model == "xray" else self.preparer.ct_slice_input(files[0])
            else:
                x = self.preparer.ct_inputs(files, [model], spacing_mm)[model]
            return self.models.explain(role=model, x=x)

        return self._answer(ctx, work)

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """The served models (name, registry version, alias, architecture, input kind, threshold, labels),
        the roles not served (role -> ``<name>@<alias>`` that had no registered version) and the notice."""
        from covidscan import RESEARCH_NOTICE

        return {"models": {r: {**i.describe(), "input_kind": i.kind, "threshold": i.threshold, "labels": i.labels} for r, i in self.preparer.infos.items()},
                "not_served": dict(self.preparer.not_served), "notice": RESEARCH_NOTICE}  # fmt: skip


Covidscan = bentoml.service(
    name="covidscan",
    workers=SERVE.workers,
    traffic={"timeout": 300, "max_concurrency": SERVE.max_concurrency},
)(_declare_models(Covidscan))
Covidscan.add_asgi_middleware(
    BodyGuard,
    max_bytes=int(SERVE.max_body_mb * 1024 * 1024),
    timeout_s=SERVE.body_timeout_s,
    parse_error_marker="An unexpected error has occurred, please check the server log.",  # BentoML 1.4's input-parsing 500
)
