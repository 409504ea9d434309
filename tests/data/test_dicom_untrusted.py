"""decode_untrusted: the decode runs in a child process with an address-space cap and a timeout."""

from __future__ import annotations

import numpy as np
import pytest

from covidscan.config import DicomLimits
from covidscan.data import dicom as D
from tests.data import dicom_factory as fx

LIMITS = DicomLimits()


def test_untrusted_image_and_series_match_in_process(tmp_path):
    path = fx.save(fx.xray(photometric="MONOCHROME1", window=(2000, 1000)), tmp_path / "x.dcm")
    img = D.decode_untrusted(path, LIMITS, max_memory_mb=256, timeout_s=60)
    ref = D.read_image(path, LIMITS)
    assert isinstance(img, D.DicomImage) and img.path == path
    np.testing.assert_array_equal(img.pixels, ref.pixels)
    assert img.meta == ref.meta and img.spacing == ref.spacing
    fx.write_series(tmp_path / "s", fx.volume(4))
    vol = D.decode_untrusted(tmp_path / "s", LIMITS, max_memory_mb=256, timeout_s=60)
    assert isinstance(vol, D.CTVolume)
    np.testing.assert_array_equal(vol.hu, D.read_series(tmp_path / "s", LIMITS).hu)


def test_untrusted_reraises_the_typed_error(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all" * 20)
    with pytest.raises(D.NotDicomError, match="not a DICOM file") as info:
        D.decode_untrusted(bad, LIMITS, max_memory_mb=256, timeout_s=60)
    assert str(bad) in str(info.value)


def test_untrusted_memory_cap(tmp_path):
    # 2 MB stored -> several float64 temporaries of 8 MB while windowing: over a 4 MB cap
    path = fx.save(fx.xray(fx.ramp(1024, 1024, hi=4095), window=(2000, 1000)), tmp_path / "big.dcm")
    with pytest.raises(D.DecodeResourceError, match="max_memory_mb") as info:
        D.decode_untrusted(path, LIMITS, max_memory_mb=4, timeout_s=60)
    assert str(path) in str(info.value)


def test_untrusted_timeout(tmp_path):
    path = fx.save(fx.xray(), tmp_path / "x.dcm")
    with pytest.raises(D.DecodeTimeoutError, match="longer than"):
        D.decode_untrusted(path, LIMITS, max_memory_mb=256, timeout_s=0.01)  # a spawn alone takes longer


def test_untrusted_picture_matches_the_ingest_reader_and_keeps_its_typed_error(tmp_path):
    import cv2

    from covidscan.data.sources.image_files import read_grey
    from covidscan.errors import DataError

    grey = (np.random.default_rng(1).random((40, 30)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "s.png"), grey)
    cv2.imwrite(str(tmp_path / "s.jpg"), grey)
    for name in ("s.png", "s.jpg"):
        got = D.decode_untrusted_picture(tmp_path / name, 10**6, max_memory_mb=256, timeout_s=60)
        np.testing.assert_array_equal(got, read_grey(tmp_path / name, 10**6))
        assert got.dtype == np.float32 and got.shape == (40, 30)
    with pytest.raises(DataError, match="exceed the configured limit"):
        D.decode_untrusted_picture(tmp_path / "s.png", 100, max_memory_mb=256, timeout_s=60)
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((3000, 3000), np.uint8))  # tiny file, 9 Mpx -> 36 MB float32 and more
    with pytest.raises(D.DecodeResourceError, match="max_memory_mb"):
        D.decode_untrusted_picture(big, 10**8, max_memory_mb=8, timeout_s=60)
