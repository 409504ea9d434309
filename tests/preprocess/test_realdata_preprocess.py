"""The preprocessing on real public images (skipped when ../shared/realdata-dev is absent)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from covidscan.config import PreprocessConfig
from covidscan.preprocess.ct import ct_stack, ct_volume, window_uint8
from covidscan.preprocess.xray import preprocess_ct_slice2d, preprocess_xray

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata-dev"
if not REALDATA.is_dir():
    REALDATA = Path("/work/shared/realdata-dev")

pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not REALDATA.is_dir(), reason="realdata-dev not present")]


def test_real_ct_volume_dimension_normalisation_and_volume():
    hu = np.load(REALDATA / "npy" / "lungdx_A0002_ct_hu_zyx.npy")  # 30 slices, 8 mm, int16 HU
    assert hu.dtype == np.int16 and hu.ndim == 3
    cfg = PreprocessConfig(ct_slices=30, ct_size=64, volume_size=64, volume_slices=64)
    stack = ct_stack(hu, cfg)
    assert stack.shape == (30, 64, 64) and stack.dtype == np.uint8
    # a chest CT under the lung window: air/lung (dark) and soft tissue (bright) both present
    assert (stack < 80).mean() > 0.1 and (stack > 180).mean() > 0.1
    vol = ct_volume(hu, 8.0, cfg)  # 29 * 8 mm = 232 mm -> 47 slices at ~5 mm, padded to 64
    assert vol.shape == (64, 64, 64) and vol.dtype == np.float16
    air = np.float16(window_uint8(np.array([-1000]))[0] / 255.0)
    assert abs(float(vol[0].mean()) - float(air)) < 0.01  # padding slice
    assert float(vol[32].std()) > 0.1  # a real slice in the middle


@pytest.mark.parametrize("folder, fn", [("ct/covid", preprocess_ct_slice2d), ("cxr/covid", preprocess_xray)])
def test_real_published_images(folder, fn):
    files = sorted((REALDATA / folder).glob("*"))[:3]
    assert files
    cfg = PreprocessConfig(xray_size=64, ct_size=48)
    for f in files:
        grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        assert grey is not None, f
        out = fn(grey.astype(np.float32), cfg)
        side = 48 if fn is preprocess_ct_slice2d else 64
        assert out.shape == (3, side, side) and out.dtype == np.uint8 and out.max() > out.min()
