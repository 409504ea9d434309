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
