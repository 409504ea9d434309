"""The package's own predictor: file(s) -> class probabilities / indicators / Grad-CAM, framework-free.

Three parts, so that a service can run them in different processes:

* :class:`Preparer` (CPU, untrusted input): decode an upload (:mod:`covidscan.serving.uploads`) and
  preprocess it with :mod:`covidscan.preprocess` (the one path shared with training) into the model's
  input array. Needs only the bundles' ``serving.json``, no weights.
* :class:`Engine` (GPU when there is one): the models; forward passes on batches, Grad-CAM.
* :func:`classification_response` / :func:`indicators_response`: the response body (probabilities, the
  operating threshold, the model name and version, the research notice; never a header field).

:class:`Predictor` joins them in one process: it is what tests, the CLI and the benchmarks call, and
what the BentoML service must agree with.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from covidscan import RESEARCH_NOTICE
from covidscan.config import DicomLimits, EvaluateConfig, ServeConfig
from covidscan.device import resolve_device
from covidscan.errors import DataError
from covidscan.serving.bundle import MODEL_FILE, ROLES, BundleInfo, read_bundle
from covidscan.serving.uploads import UploadError, ct_upload_form, read_ct, read_ct_slice, read_image_2d, read_images_2d

log = logging.getLogger(__name__)

POSITIVE_CLASS = "covid19"


class ModelUnavailable(DataError):
    """No model is served for a role (not registered, or not in the bento): HTTP 503."""


CT_ROLES = ("ct2d", "ct3d", "ctslice")  # what ``/ct``'s ``models`` may name
SERIES_ROLES = ("ct2d", "ct3d")  # the models of a CT series (the stack student, the 3D network)


def ct_roles(form: str, models: str | Sequence[str] | None, served: Sequence[str]) -> list[str]:
    """Which CT models answer an upload: the routing of ``/ct``, shared by the service and :class:`Predictor`.

    Args:
        form: ``slice`` (one PNG/JPEG, or one single-frame CT DICOM) or ``series`` (see
            :func:`covidscan.serving.uploads.ct_upload_form`).
        models: the client's choice (comma-separated text or a list); empty or None = by the upload:
            a slice -> ``ctslice`` (the CT-slice model), a series -> ``ct2d`` and ``ct3d``.
        served: the roles this service has a model for.

    Returns:
        The roles, served ones only unless none of the requested is served (then all of them, so that
        the answer is a 503 naming the missing model rather than an empty result).

    Raises:
        UploadError: 422 for an unknown role, ``ctslice`` asked for a series, or ``ct2d``/``ct3d`` asked
            for a PNG/JPEG (an image is not a series); a one-slice DICOM may still be sent to them.
    """
    wanted = [r.strip() for r in models.split(",")] if isinstance(models, str) else list(models or [])
    wanted = [r for r in wanted if r]
    bad = [r for r in wanted if r not in CT_ROLES]
    if bad:
        raise UploadError(f"models: expected ct2d, ct3d and/or ctslice, got {','.join(wanted)!r}", 422, "bad_parameter")
    if not wanted:
        if form == "slice":
            return ["ctslice"]  # one slice goes to the slice model only: 503 when it is not served
        wanted = list(SERIES_ROLES)
    if form == "series" and "ctslice" in wanted:
        raise UploadError("models: ctslice takes one CT slice (one PNG/JPEG, or one single-frame CT DICOM), not a series", 422, "bad_parameter")
    return [r for r in wanted if r in served] or wanted


# ---------------------------------------------------------------------------------- preparing
class Preparer:
    """Decode and preprocess uploads for the served models (no weights needed).

    Args:
        infos: role -> bundle info.
        serve: upload caps.
        limits: DICOM caps.
        not_served: role -> ``<registered name>@<alias>`` of the roles without a model (named in the 503).
    """

    def __init__(self, infos: Mapping[str, BundleInfo], serve: ServeConfig, limits: DicomLimits, not_served: Mapping[str, str] | None = None) -> None:
        from covidscan.data.dicom import DecoderPool

        self.infos = dict(infos)
        self.serve = serve
        self.limits = limits
        self.not_served = dict(not_served or {})
        # per role, computed once: the preprocessing parameters and the input spec (not per request)
        self._pre = {role: info.preprocess_config() for role, info in self.infos.items()}
        self._specs: dict[tuple[str, str], Any] = {}
        # pre-started sandboxed decoders (serve.decode_workers, each replaced after serve.decode_max_jobs)
        self.decoders = (DecoderPool(serve.decode_workers, max_memory_mb=serve.decode_memory_mb, max_jobs=serve.decode_max_jobs)
                         if serve.decode_isolated else None)  # fmt: skip

    def close(self) -> None:
        """Stop the decoding workers (the service's shutdown hook; also done at interpreter exit)."""
        if self.decoders is not None:
            self.decoders.close()

    def __enter__(self) -> Preparer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _preprocess(self, role: str, needed_for: str = ""):
        """The role's PreprocessConfig (validated once) after checking the role is served."""
        self.info(role, needed_for)
        return self._pre[role]

    def _spec(self, kind: str, role: str):
        """The input spec of ``kind`` with the role's parameters (built once)."""
        from covidscan.preprocess import input_spec

        key = (kind, role)
        if key not in self._specs:
            self._specs[key] = input_spec(kind, self._pre[role])
        return self._specs[key]

    def info(self, role: str, needed_for: str = "") -> BundleInfo:
        """The bundle info of a served role.

        Raises:
            ModelUnavailable: the role has no model; the message names the registered model that is
                missing when known, and ``needed_for`` (what the request needed it for).
        """
        if role not in self.infos:
            missing = self.not_served.get(role)
            why = f"{missing} had no registered version when this bento was built" if missing else "none registered under the serving alias, or not in this bento"
            raise ModelUnavailable(f"{needed_for + ': ' if needed_for else ''}no {role} model is served ({why})")
        return self.infos[role]

    def xray_grey(self, path: Path) -> np.ndarray:
        """An X-ray upload (DICOM CR/DX, PNG, JPEG) as ingest's float32 array (bright = dense)."""
        return read_image_2d(Path(path), self.limits, self.serve, modalities=frozenset({"CR", "DX"}), decoders=self.decoders).pixels

    def xray_input(self, path: Path) -> np.ndarray:
        """An X-ray upload as the 2D model's input: float32 (3, size, size) in [0, 1]."""
        from covidscan.preprocess import preprocess_2d

        pre = self._preprocess("xray")
        arr = preprocess_2d(self.xray_grey(path), pre, kind="xray", what="upload")
        return self._spec("xray", "xray").to_tensor(arr).numpy()

    def ct_inputs(self, files: Sequence[Path], roles: Sequence[str], spacing_mm: float | None = None) -> dict[str, np.ndarray]:
        """A CT upload as the inputs of the requested CT models: ``ct2d`` (S, size, size), ``ct3d`` (1, D, H, W)."""
        from covidscan.preprocess.ct import ct_stack, ct_volume

        pres = {r: self._preprocess(r) for r in roles}
        with tempfile.TemporaryDirectory(prefix="covidscan-ct-") as work:
            vol = read_ct([Path(f) for f in files], Path(work), self.limits, self.serve, spacing_mm, decoders=self.decoders)
        out = {}
        for role, pre in pres.items():
            if role == "ct2d":
                out[role] = self._spec("ct_stack", role).to_tensor(ct_stack(vol.hu, pre, what="upload")).numpy()
            else:
                if not np.isfinite(vol.spacing_z):
                    raise UploadError("upload: the slice spacing is unknown (a .npy volume needs spacing_mm) so the 3D model cannot be used", 422, "no_spacing")
                out[role] = self._spec("ct_volume", role).to_tensor(ct_volume(vol.hu, vol.spacing_z, pre, what="upload")).numpy()
        return out

    def ct_slice_input(self, path: Path) -> np.ndarray:
        """One CT slice as the CT-slice model's input: float32 (3, ct_size, ct_size) in [0, 1].

        A PNG/JPEG is what a ``ct_slice2d`` record is at ingest (grey float32); a single-frame CT DICOM
        is read in HU, rounded to int16 as ingest stores CT, and rendered with the CT lung window
        (:func:`covidscan.preprocess.ct.slice_grey`). Both then take the one 2D path,
        :func:`covidscan.preprocess.spec.model_inputs` with kind ``ct_slice2d``, as at training.

        Raises:
            ModelUnavailable: no CT-slice model is served (checked before anything is decoded).
        """
        from covidscan.preprocess import model_inputs
        from covidscan.preprocess.ct import slice_grey

        pre = self._preprocess("ctslice", "one CT slice (a PNG/JPEG or a single-frame CT DICOM) is classified by the CT-slice model")
        decoded = read_ct_slice(Path(path), self.limits, self.serve, decoders=self.decoders)
        grey = decoded.pixels
        if decoded.source == "dicom":
            grey = slice_grey(np.clip(np.rint(grey), -32768, 32767).astype(np.int16), pre, what="upload")
        arr = model_inputs(grey, "ct_slice2d", pre, what="upload")["ct_slice2d"]
        return self._spec("ct_slice2d", "ctslice").to_tensor(arr).numpy()

    def ct_request(self, files: Sequence[Path], models: str | Sequence[str] | None = None, spacing_mm: float | None = None) -> dict[str, np.ndarray]:
        """A ``/ct`` upload routed (:func:`ct_roles`) and prepared: role -> model input.

        One slice (a PNG/JPEG or a single-frame CT DICOM) goes to ``ctslice``; a series (several DICOM
        slices, a zip, a multi-frame file, a .npy volume) to ``ct2d``/``ct3d``.
        """
        files = [Path(f) for f in files]
        if not files:
            raise UploadError("no file uploaded", 422, "no_file")
        form = ct_upload_form(files, self.limits)
        roles = ct_roles(form, models, list(self.infos))
        out: dict[str, np.ndarray] = {}
        if "ctslice" in roles:
            out["ctslice"] = self.ct_slice_input(files[0])
        series = [r for r in roles if r != "ctslice"]
        if series:
            out.update(self.ct_inputs(files, series, spacing_mm))
        return out

    def crop_inputs(self, files: Sequence[Path]) -> np.ndarray:
        """Lesion crop images (DICOM, PNG, JPEG; each one whole crop) as CNNRF inputs: (n, 3, c, c)."""
        from covidscan.preprocess.xray import lesion_crop, normalise_to_uint8

        if not files:
            raise UploadError("no lesion crop uploaded", 422, "no_file")
        if len(files) > self.serve.max_crops:
            raise UploadError(f"{len(files)} crops uploaded; serve.max_crops = {self.serve.max_crops}", 413, "too_many_files")
        pre = self._preprocess("indicators")
        decoded = read_images_2d([Path(f) for f in files], self.limits, self.serve, modalities=frozenset({"CR", "DX", "CT"}),
                                 names=[f"upload[{i}]" for i in range(len(files))], decoders=self.decoders)  # one sandboxed job for all crops
        crops = []
        for i, d in enumerate(decoded):
            grey = d.pixels
            grey8 = grey.astype(np.uint8) if grey.min() >= 0 and grey.max() <= 255 and np.all(grey == np.rint(grey)) else normalise_to_uint8(grey, what=f"upload[{i}]")
            crops.append(lesion_crop(grey8, (0, 0, grey8.shape[1], grey8.shape[0]), pre, what=f"upload[{i}]"))
        return self._spec("lesion_crop", "indicators").to_tensor(np.stack(crops)).numpy()


# ------------------------------------------------------------------------------------ models
class Engine:
    """The served networks, on one device.

    Args:
        bundles: role -> bundle folder (``model.pt`` + ``serving.json``).
        device: ``auto`` (CUDA when available, else CPU), ``cuda`` (refused without CUDA) or ``cpu``;
            see :func:`covidscan.device.resolve_device`.
        explain: Grad-CAM/DBSCAN settings (``cam_threshold``, ``dbscan_eps``, ``dbscan_min_samples``).
        device_setting: where ``device`` came from, named in the error when it cannot be honoured
            (the BentoML service passes ``"COVIDSCAN_DEVICE"``).

    Raises:
        DeviceUnavailable: ``device`` is ``cuda`` and there is no CUDA device (the service does not start).
    """

    def __init__(self, bundles: Mapping[str, str | Path], device: str = "auto", explain: EvaluateConfig | None = None,
                 device_setting: str = "the serving device") -> None:  # fmt: skip
        from covidscan.models.zoo import load_model

        self.device = str(resolve_device(device, device_setting))
        self.infos: dict[str, BundleInfo] = {}
        self.models: dict[str, Any] = {}
        self.explain_cfg = explain or EvaluateConfig()
        self._cam_lock = threading.Lock()  # Grad-CAM hooks are per model: one explanation at a time
        self.cuda = self.device.startswith("cuda")
        self._channels_last: dict[str, bool] = {}
        for role, folder in bundles.items():
            self.infos[role] = read_bundle(folder)
            model = load_model(Path(folder) / MODEL_FILE, map_location=self.device).eval()
            # on a GPU, 2D networks run channels_last (tensor-core friendly convolutions); a 3D network keeps its layout
            self._channels_last[role] = self.cuda and self.infos[role].kind != "ct_volume"
            if self._channels_last[role]:
                import torch

                model = model.to(memory_format=torch.channels_last)
            self.models[role] = model
            log.info("loaded %s %s v%s on %s", role, self.infos[role].name, self.infos[role].version, self.device)

    def _model(self, role: str):
        if role not in self.models:
            raise ModelUnavailable(f"no {role} model is served")
        return self.models[role]

    def forward(self, role: str, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (classifiers) or outputs (regressors) of a batch, float32 (n, C).

        No gradients (``torch.inference_mode``); on CUDA the batch is copied once (pinned, non-blocking),
        2D networks run channels_last and the forward runs under bf16 autocast (outputs in float32).
        """
        import torch

        model = self._model(role)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            if self.cuda:
                x = x.pin_memory().to(self.device, non_blocking=True)
                if self._channels_last[role] and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    y = model(x)
            else:
                y = model(x)
            y = y.float()
            if model.card.task != "regression":
                y = torch.softmax(y, dim=1)
        return y.cpu().numpy()

    def explain(self, role: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grad-CAM heatmap of one input at input resolution and its DBSCAN centres (normalised)."""
        from covidscan.explain.centres import heatmap_centres
        from covidscan.explain.gradcam import grad_cam

        model = self._model(role)
        dims = 3 if self.infos[role].kind == "ct_volume" else 2
        cfg = self.explain_cfg
        with self._cam_lock:
            heat = grad_cam(model, np.asarray(x, dtype=np.float32), model.target_layer, spatial_dims=dims)
        centres = heatmap_centres(heat, cfg.cam_threshold, cfg.dbscan_eps, cfg.dbscan_min_samples)
        return heat, centres


# --------------------------------------------------------------------------------- responses
def _positive_index(labels: Sequence[str]) -> int:
    return labels.index(POSITIVE_CLASS) if POSITIVE_CLASS in labels else len(labels) - 1


def classification_response(info: BundleInfo, probs: np.ndarray) -> dict[str, Any]:
    """The body of a classification answer: probabilities, threshold, the call, model and notice."""
    p = [float(v) for v in np.asarray(probs, dtype=float).reshape(-1)]
    labels = info.labels
    if len(p) != len(labels):
        raise DataError(f"{info.name}: {len(p)} outputs for {len(labels)} labels")
    pos = _positive_index(labels)
    score = p[pos]
    return {
        "probabilities": dict(zip(labels, p)),
        "positive_class": labels[pos],
        "score": score,
        "threshold": info.threshold,
        "call": labels[pos] if score >= info.threshold else f"not {labels[pos]}",
        "model": info.describe(),
        "notice": RESEARCH_NOTICE,
    }


def indicators_response(info: BundleInfo, outputs: np.ndarray) -> dict[str, Any]:
    """CNNRF: the mean over crops, in raw units (de-normalised with the model card's training range) and 0-1.

    Raises:
        MissingTargetRange: the served model's card has no target range (named by registry version).
    """
    from covidscan.models.card import target_range_of

    rng = target_range_of(info.card, f"{info.name} v{info.version}")
    mean = np.asarray(outputs, dtype=float).reshape(len(outputs), -1).mean(0)
    names = list(rng.names)
    if names != info.labels or mean.size != len(names):
        raise DataError(f"{info.name} v{info.version}: {mean.size} outputs {info.labels} for the target range of {names}")
    body: dict[str, Any] = {
        "raw_units": dict(zip(names, (float(v) for v in rng.denormalise(mean)))),
        "normalised": dict(zip(names, (float(v) for v in mean))),
        "target_range": {n: {"min": lo, "max": hi} for n, lo, hi in zip(rng.names, rng.low, rng.high)},
        "n_crops": int(len(outputs)),
    }
    body.update(model=info.describe(), notice=RESEARCH_NOTICE)
    return body


def overlay_png(background: np.ndarray, heat: np.ndarray) -> bytes:
    """The Grad-CAM overlay as PNG bytes (a volume: its peak slice)."""
    import matplotlib.pyplot as plt

    from covidscan.explain.gradcam import overlay, peak_slice

    if heat.ndim == 3:
        k = peak_slice(heat)
        heat, background = heat[k], background[k]
    buf = io.BytesIO()
    plt.imsave(buf, overlay(background, heat), format="png")
    return buf.getvalue()


def explain_response(info: BundleInfo, probs: np.ndarray, heat: np.ndarray, centres: np.ndarray, background: np.ndarray) -> dict[str, Any]:
    """Classification plus the overlay (base64 PNG) and the DBSCAN centres ((x, y) or (z, y, x), 0-1)."""
    body = classification_response(info, probs)
    axes = ["x", "y"] if heat.ndim == 2 else ["z", "y", "x"]
    body["centres"] = [dict(zip(axes, (float(v) for v in c))) for c in np.asarray(centres)]
    body["overlay_png_base64"] = base64.b64encode(overlay_png(background, heat)).decode("ascii")
    return body


def background_of(role: str, x: np.ndarray) -> np.ndarray:
    """The image an overlay is drawn on: the pseudo-coloured input (H, W, 3) or the volume (D, H, W)."""
    arr = np.asarray(x)
    if role == "ct3d":
        return arr[0]
    return np.transpose(arr, (1, 2, 0)) if arr.shape[0] == 3 else arr.mean(0)


# ---------------------------------------------------------------------------------- together
class Predictor:
    """Preparer + Engine in one process: the package's own predictor.

    Args:
        bundles: role -> bundle folder.
        serve: upload caps.
        limits: DICOM caps.
        device: ``auto``, ``cuda`` or ``cpu`` (:func:`covidscan.device.resolve_device`).
        explain: Grad-CAM/DBSCAN settings.
    """

    def __init__(self, bundles: Mapping[str, str | Path], serve: ServeConfig | None = None, limits: DicomLimits | None = None,
                 device: str = "auto", explain: EvaluateConfig | None = None) -> None:  # fmt: skip
        unknown = set(bundles) - set(ROLES)
        if unknown:
            raise DataError(f"unknown serving roles {sorted(unknown)}; expected {', '.join(ROLES)}")
        self.engine = Engine(bundles, device, explain)
        self.preparer = Preparer(self.engine.infos, serve or ServeConfig(), limits or DicomLimits())

    def close(self) -> None:
        """Stop the decoding workers (also done at interpreter exit)."""
        self.preparer.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict_xray(self, path: str | Path) -> dict[str, Any]:
        """Classify one X-ray file (DICOM, PNG or JPEG)."""
        x = self.preparer.xray_input(Path(path))
        return classification_response(self.preparer.info("xray"), self.engine.forward("xray", x[None])[0])

    def predict_ct(self, files: Sequence[str | Path], roles: str | Sequence[str] | None = None, spacing_mm: float | None = None) -> dict[str, Any]:
        """Classify one CT with each requested model, routed as ``/ct`` routes it (:func:`ct_roles`).

        One slice (a PNG/JPEG, or a single-frame CT DICOM) -> the CT-slice model; a series (a zip,
        several slice files, a multi-frame file or a .npy) -> the stack and 3D models.
        """
        inputs = self.preparer.ct_request([Path(f) for f in files], roles, spacing_mm)
        results = {role: classification_response(self.preparer.info(role), self.engine.forward(role, x[None])[0]) for role, x in inputs.items()}
        return {"results": results, "notice": RESEARCH_NOTICE}

    def indicators(self, files: Sequence[str | Path]) -> dict[str, Any]:
        """The five clinical indicators from lesion crop images (mean over the crops)."""
        crops = self.preparer.crop_inputs([Path(f) for f in files])
        return indicators_response(self.preparer.info("indicators"), self.engine.forward("indicators", crops))

    def explain(self, files: Sequence[str | Path], role: str = "xray", spacing_mm: float | None = None) -> dict[str, Any]:
        """Grad-CAM overlay and DBSCAN centres for an X-ray (``xray``), a CT slice (``ctslice``) or a CT volume (``ct3d``, ``ct2d``)."""
        if role == "xray":
            x = self.preparer.xray_input(Path(files[0]))
        elif role == "ctslice":
            x = self.preparer.ct_slice_input(Path(files[0]))
        else:
            x = self.preparer.ct_inputs([Path(f) for f in files], [role], spacing_mm)[role]
        probs = self.engine.forward(role, x[None])[0]
        heat, centres = self.engine.explain(role, x)
        return explain_response(self.preparer.info(role), probs, heat, centres, background_of(role, x))
