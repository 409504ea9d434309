"""Malformed and unsupported DICOM files: each is refused with its own typed error naming the file,
before any large allocation, and `covidscan inspect` prints one line and exits non-zero."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import uid as U
from pydicom.encaps import encapsulate
from typer.testing import CliRunner

from covidscan.cli import app
from covidscan.config import DicomLimits
from covidscan.data import dicom as D
from covidscan.errors import DicomError
from tests.data import dicom_factory as fx

LIMITS = DicomLimits()


def _write_bytes(data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / "bad.dcm"
        path.write_bytes(data)
        return path

    return build


def _cut(syntax: str, keep: Callable[[int], int]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        good = fx.save(fx.xray(), tmp / "good.dcm", syntax)
        data = good.read_bytes()
        good.unlink()
        path = tmp / "bad.dcm"
        path.write_bytes(data[: keep(len(data))])
        return path

    return build


def _edit(edit: Callable, syntax: str = U.ExplicitVRLittleEndian, base: Callable = fx.xray) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        ds = base()
        edit(ds)
        path = tmp / "bad.dcm"
        if syntax == U.ExplicitVRLittleEndian:  # also for a private/unknown syntax set by `edit`
            ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
        else:
            fx.save(ds, path, syntax)
        return path

    return build


def _ct() -> "fx.Dataset":
    return fx.ct_slice(fx.ramp(16, 16, lo=-1000, hi=500))


def _set(**values) -> Callable:
    def edit(ds):
        for k, v in values.items():
            setattr(ds, k, v)

    return edit


def _delete(*keywords) -> Callable:
    def edit(ds):
        for k in keywords:
            delattr(ds, k)

    return edit


def _colour(photometric: str) -> Callable:
    def edit(ds):
        ds.PhotometricInterpretation = photometric
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), np.uint8).tobytes()

    return edit


def _palette(ds):
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.uint8).tobytes()


def _encapsulated(syntax: str, payload: bytes) -> Callable:
    def edit(ds):
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([payload])
        ds["PixelData"].is_undefined_length = True
        ds["PixelData"].VR = "OB"

    return edit


def _j2k_rows_lie(tmp: Path) -> Path:
    path = fx.save(fx.xray(fx.ramp(64, 48, hi=4095)), tmp / "bad.dcm", U.JPEG2000Lossless)
    ds = fx.pydicom_read(path)
    ds.Rows, ds.Columns = 48, 64  # the codestream says 64 x 48
    ds.save_as(path, enforce_file_format=True)
    return path


def _j2k_garbage(tmp: Path) -> Path:
    path = fx.save(fx.xray(fx.ramp(64, 48, hi=4095)), tmp / "bad.dcm", U.JPEG2000Lossless)
    ds = fx.pydicom_read(path)
    frame = bytearray(next(fx.generate_frames(ds.PixelData, number_of_frames=1)))
    frame[60:] = np.random.default_rng(0).integers(0, 256, len(frame) - 60, dtype=np.uint8).tobytes()
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(path, enforce_file_format=True)
    return path


def _frames_not_a_number(tmp: Path) -> Path:
    ds = fx.xray()
    ds.NumberOfFrames = 7
    path = tmp / "bad.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    tag = b"\x28\x00\x08\x00IS\x02\x007 "
    assert data.count(tag) == 1
    path.write_bytes(data.replace(tag, b"\x28\x00\x08\x00IS\x02\x001a"))
    return path


def _deflate_bomb(tmp: Path) -> Path:
    ds = fx.xray(np.zeros((1024, 1024), np.int64))  # 2 MB of zeros -> a few kB deflated
    return fx.save(ds, tmp / "bad.dcm", U.DeflatedExplicitVRLittleEndian)


def _too_big_file(tmp: Path) -> Path:
    return fx.save(fx.xray(fx.ramp(256, 256)), tmp / "bad.dcm")


SMALL_FILES = DicomLimits(max_file_mb=0.05)

# (id, builder, expected error, message fragment, limits)
CASES = [
    ("empty", _write_bytes(b""), D.EmptyFileError, "empty file", LIMITS),
    ("text", _write_bytes(b"patient,label\nx,covid19\n" * 20), D.NotDicomError, "not a DICOM file", LIMITS),
    ("in-preamble", _write_bytes(b"\0" * 60), D.TruncatedError, "preamble", LIMITS),
    ("cut-in-meta", _cut(U.ExplicitVRLittleEndian, lambda n: 150), D.TruncatedError, "file meta", LIMITS),
    ("cut-native-pixels", _cut(U.ExplicitVRLittleEndian, lambda n: n - 100), D.TruncatedError, "(7FE0,0010)", LIMITS),
    ("cut-rle-pixels", _cut(U.RLELossless, lambda n: n - 40), D.TruncatedError, "truncated", LIMITS),
    ("no-pixel-data", _edit(_delete("PixelData")), D.MissingPixelDataError, "no Pixel Data", LIMITS),
    ("empty-pixel-data", _edit(_set(PixelData=b"")), D.MissingPixelDataError, "empty", LIMITS),
    ("short-pixel-data", _edit(_set(PixelData=b"\0" * 100)), D.ShortPixelDataError, "expected 1536", LIMITS),
    ("absurd-rows", _edit(_set(Rows=60000, Columns=60000)), D.ImageTooLargeError, "60000 x 60000", LIMITS),
    ("absurd-frames", _edit(_set(NumberOfFrames=100000)), D.ImageTooLargeError, "NumberOfFrames 100000", LIMITS),
    ("decoded-too-big", _edit(_set(Rows=4000, Columns=4000, NumberOfFrames=100)), D.ImageTooLargeError, "max_pixels_mb", LIMITS),
    ("zero-rows", _edit(_set(Rows=0)), D.PixelFormatError, "has no pixels", LIMITS),
    ("bits-stored-over-allocated", _edit(_set(BitsStored=20)), D.PixelFormatError, "BitsStored 20", LIMITS),
    ("bits-allocated-12", _edit(_set(BitsAllocated=12)), D.PixelFormatError, "BitsAllocated 12", LIMITS),
    ("no-photometric", _edit(_delete("PhotometricInterpretation")), D.PixelFormatError, "PhotometricInterpretation", LIMITS),
    ("frames-not-a-number", _frames_not_a_number, D.HeaderValueError, "NumberOfFrames", LIMITS),
    ("mpeg2", _edit(_encapsulated("1.2.840.10008.1.2.4.100", b"\0\0\1\xb3" + b"\0" * 60)), D.UnsupportedTransferSyntaxError, "MPEG2", LIMITS),
    ("unknown-syntax", _edit(_encapsulated("1.2.3.4.5.6", b"\0" * 64)), D.UnsupportedTransferSyntaxError, "1.2.3.4.5.6", LIMITS),
    ("wrong-modality", _edit(_set(SOPClassUID="1.2.840.10008.5.1.4.1.1.7", Modality="MG")), D.WrongModalityError, "Modality is 'MG'", LIMITS),
    ("no-modality", _edit(_delete("Modality")), D.WrongModalityError, "no Modality", LIMITS),
    ("mr-sop-class", _edit(_set(SOPClassUID=fx.MR_SOP)), D.UnsupportedSOPClassError, "MR Image Storage", LIMITS),
    ("rtstruct-sop-class", _edit(_set(SOPClassUID=fx.RTSTRUCT_SOP)), D.UnsupportedSOPClassError, "RT Structure Set", LIMITS),
    ("ct-without-rescale", _edit(_delete("RescaleSlope", "RescaleIntercept"), base=_ct), D.MissingRescaleError, "RescaleSlope", LIMITS),
    ("rgb", _edit(_colour("RGB")), D.ColourImageError, "'RGB'", LIMITS),
    ("ybr", _edit(_colour("YBR_FULL")), D.ColourImageError, "'YBR_FULL'", LIMITS),
    ("palette", _edit(_palette), D.ColourImageError, "'PALETTE COLOR'", LIMITS),
    ("j2k-garbage", _j2k_garbage, D.DecodeError, "cannot decode", LIMITS),
    ("j2k-size-lie", _j2k_rows_lie, D.DecodeError, "the compressed frame is 64 x 48", LIMITS),
    ("multi-frame-xray", _edit(_set(NumberOfFrames=2, PixelData=b"\0" * 3072)), D.UnexpectedMultiFrameError, "2 frames", LIMITS),
    ("file-over-limit", _too_big_file, D.FileTooLargeError, "max_file_mb", SMALL_FILES),
    ("deflate-bomb", _deflate_bomb, D.FileTooLargeError, "inflates to more than", DicomLimits(max_file_mb=0.5)),
]


@pytest.mark.parametrize(("builder", "error", "fragment", "limits"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_file_is_refused_with_its_own_error(tmp_path, builder, error, fragment, limits):
    path = builder(tmp_path)
    with pytest.raises(error) as info:
        D.read_image(path, limits)
    message = str(info.value)
    assert isinstance(info.value, DicomError)
    assert message.startswith(str(path)), message
    assert fragment in message, message
    assert "\n" not in message


def test_every_case_has_a_distinct_message(tmp_path):
    messages = set()
    for name, builder, _, _, limits in CASES:
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(DicomError) as info:
            D.read_image(builder(folder), limits)
        messages.add(str(info.value).split(": ", 1)[1])
    assert len(messages) == len(CASES) >= 15


def test_wrong_modality_for_the_caller(tmp_path):
    path = fx.save(_ct(), tmp_path / "ct.dcm")
    with pytest.raises(D.WrongModalityError, match="expected CR/DX"):
        D.read_image(path, LIMITS, modalities={"CR", "DX"})


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(D.NotDicomError, match="no such file"):
        D.read_image(tmp_path / "nope.dcm", LIMITS)
    with pytest.raises(D.NotDicomError, match="is a folder"):
        D.read_image(tmp_path, LIMITS)


runner = CliRunner()


@pytest.mark.parametrize(
    ("builder", "limits"),
    [(c[1], c[4]) for c in CASES if c[4] is LIMITS],
    ids=[c[0] for c in CASES if c[4] is LIMITS],
)
def test_inspect_cli_one_line_and_non_zero_exit(tmp_path, builder, limits):
    path = builder(tmp_path)
    result = runner.invoke(app, ["inspect", str(path), "--params", str(tmp_path / "absent.yaml")])
    text = result.output.strip()
    assert result.exit_code != 0
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error:") and str(path) in text
