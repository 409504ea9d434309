"""One CT slice (a PNG/JPEG, or a single-frame CT DICOM) goes to the CT-slice model; a series to the stack model.

The package's own predictor on tiny bundles written from saved models (no registry, no server; the
real ``bentoml serve`` of the same routing is in ``test_service.py``). Every decode runs in the
memory-capped child process, as in the service.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from covidscan.config import DicomLimits, ServeConfig
from covidscan.data.sources.image_files import read_grey
from covidscan.models.zoo import save_model
from covidscan.preprocess import input_spec
from covidscan.preprocess.ct import slice_grey, window_uint8
from covidscan.preprocess.xray import preprocess_2d
from covidscan.serving.bundle import write_bundle
from covidscan.serving.predictor import ModelUnavailable, Predictor, Preparer, ct_roles
from covidscan.serving.uploads import UploadError, ct_upload_form
from tests.data import dicom_factory as fx
from tests.serving import tiny_models as tm

LIMITS = DicomLimits()
SERVE = ServeConfig(decode_memory_mb=1024.0)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bundles")
    out = {}
    for role in ("ct2d", "ctslice"):
        save_model(tm.build(role, seed=1), d / f"{role}.pt")
        out[role] = d / role
        write_bundle(d / f"{role}.pt", out[role], role=role, name=tm.NAMES[role], version="1", alias="champion", preprocess=tm.TINY_PRE)
    return out


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, Path | list[Path]]:
    d = tmp_path_factory.mktemp("uploads")
    hu = fx.ramp(40, 36, lo=-1100, hi=300)
    grey = (np.random.default_rng(5).random((50, 46)) * 255).astype(np.uint8)
    cv2.imwrite(str(d / "slice.png"), grey)
    cv2.imwrite(str(d / "slice.jpg"), grey)
    cv2.imwrite(str(d / "rendered.png"), window_uint8(hu, tm.TINY_PRE.ct_window_center, tm.TINY_PRE.ct_window_width))
    (d / "series").mkdir()
    return {
        "png": d / "slice.png",
        "jpeg": d / "slice.jpg",
        "rendered": d / "rendered.png",  # the DICOM slice below, as a published lung-window slice
        "dicom": fx.save(fx.ct_slice(hu), d / "slice.dcm"),
        "xray_dicom": fx.save(fx.xray(fx.ramp(16, 16)), d / "x.dcm"),
        "series": fx.write_series(d / "series", fx.volume(5, 24, 20), spacing_z=2.5),
    }


def test_a_png_jpeg_or_one_slice_dicom_reaches_the_slice_model_and_a_series_the_stack_model(bundles, uploads):
    pred = Predictor(bundles, SERVE, LIMITS, device="cpu")
    for key in ("png", "jpeg", "dicom"):
        body = pred.predict_ct([uploads[key]])
        assert set(body["results"]) == {"ctslice"}, key
        assert body["results"]["ctslice"]["model"]["name"] == "covidscan-student-ct-slice" and body["notice"].startswith("For research use only")
    body = pred.predict_ct(uploads["series"])
    assert set(body["results"]) == {"ct2d"} and body["results"]["ct2d"]["model"]["name"] == "covidscan-student-ct"


def test_a_slice_is_preprocessed_as_training_preprocesses_a_ct_slice2d_record(bundles, uploads):
    prep = Preparer({"ctslice": Predictor({"ctslice": bundles["ctslice"]}, device="cpu").engine.infos["ctslice"]}, SERVE, LIMITS)
    pre = prep.info("ctslice").preprocess_config()
    spec = input_spec("ct_slice2d", pre)
    # a PNG: ingest's reader, then the one 2D path (preprocess_2d, kind ct_slice2d), as the cache writes it
    expected = spec.to_tensor(preprocess_2d(read_grey(uploads["png"], 10**7), pre, kind="ct_slice2d")).numpy()
    np.testing.assert_array_equal(prep.ct_slice_input(uploads["png"]), expected)
    # a one-slice DICOM: HU -> the CT lung window -> the same 2D path; identical to its lung-window PNG
    from_dicom = prep.ct_slice_input(uploads["dicom"])
    np.testing.assert_array_equal(from_dicom, prep.ct_slice_input(uploads["rendered"]))
    hu = fx.ramp(40, 36, lo=-1100, hi=300)
    np.testing.assert_array_equal(from_dicom, spec.to_tensor(preprocess_2d(slice_grey(hu, pre), pre, kind="ct_slice2d")).numpy())
    assert from_dicom.shape == (3, 32, 32) and from_dicom.dtype == np.float32


def test_without_a_slice_model_a_slice_gets_a_503_naming_the_missing_model_and_series_still_work(bundles, uploads):
    pred = Predictor({"ct2d": bundles["ct2d"]}, SERVE, LIMITS, device="cpu")
    pred.preparer.not_served = {"ctslice": "covidscan-student-ct-slice@champion"}  # what bento/serving.json carries
    for key in ("png", "dicom"):
        with pytest.raises(ModelUnavailable, match="covidscan-student-ct-slice@champion") as info:
            pred.predict_ct([uploads[key]])
        assert "CT-slice model" in str(info.value) and "no ctslice model is served" in str(info.value)
    assert set(pred.predict_ct(uploads["series"])["results"]) == {"ct2d"}


def test_upload_form_and_routing(uploads):
    assert ct_upload_form([uploads["png"]], LIMITS) == "slice"
    assert ct_upload_form([uploads["dicom"]], LIMITS) == "slice"
    assert ct_upload_form([uploads["xray_dicom"]], LIMITS) == "series"  # read_ct refuses it with its 415
    assert ct_upload_form(uploads["series"], LIMITS) == "series"
    served = ["ct2d", "ct3d", "ctslice"]
    assert ct_roles("slice", "", served) == ["ctslice"]
    assert ct_roles("slice", None, ["ct2d"]) == ["ctslice"]  # never silently another model
    assert ct_roles("series", "", served) == ["ct2d", "ct3d"]
    assert ct_roles("series", "ct2d,ct3d", ["ct3d"]) == ["ct3d"]
    assert ct_roles("slice", "ct2d", served) == ["ct2d"]  # a one-slice DICOM as a one-slice volume, on request
    for form, models in (("series", "ctslice"), ("slice", "ct4d")):
        with pytest.raises(UploadError) as info:
            ct_roles(form, models, served)
        assert info.value.status == 422 and info.value.code == "bad_parameter"


def test_a_broken_png_slice_is_a_4xx_from_the_isolated_decoder(bundles, tmp_path):
    good = cv2.imencode(".png", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))[1].tobytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes(good[: len(good) // 2])  # a valid header (it passes the header check), truncated pixel data
    pred = Predictor(bundles, SERVE, LIMITS, device="cpu")
    with pytest.raises(UploadError) as info:
        pred.predict_ct([bad])
    assert (info.value.status, info.value.code) == (422, "bad_image") and str(tmp_path) not in str(info.value)
