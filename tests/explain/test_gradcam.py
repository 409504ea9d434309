"""Grad-CAM through MONAI on tiny 2D/3D CNNs whose logits are the means of blob-detecting channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from covidscan.errors import DataError
from covidscan.explain.gradcam import grad_cam, overlay, peak_slice, save_overlay_png

BACKGROUND, BRIGHT, DARK = 0.5, 1.0, 0.0


class BlobNet(nn.Module):
    """Channel 0 fires on bright regions, channel 1 on dark ones; logit k = mean of channel k."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        self.features = nn.Sequential(
            conv(1, 2, 3, padding=1, padding_mode="replicate"), nn.ReLU(inplace=True), pool(2)
        )
        with torch.no_grad():
            k = self.features[0].weight
            k.zero_()
            k[0] = 1.0 / k[0].numel()
            k[1] = -1.0 / k[1].numel()
            self.features[0].bias.copy_(torch.tensor([-0.6, 0.4]))
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return f.mean(dim=tuple(range(2, 2 + self.spatial_dims)))


def _image(shape, bright_at, dark_at, radius=3):
    grid = np.indices(shape)
    img = np.full(shape, BACKGROUND, dtype=np.float32)
    for centre, value in ((bright_at, BRIGHT), (dark_at, DARK)):
        if centre is not None:
            d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
            img[d2 <= radius**2] = value
    return img[None]  # channel axis


def _peak(cam):
    return np.unravel_index(np.argmax(cam), cam.shape)


@pytest.mark.parametrize(
    "spatial_dims,shape,bright,dark",
    [
        (2, (32, 32), (8, 22), (24, 8)),
        (2, (40, 24), (30, 6), (10, 16)),
        (3, (16, 24, 24), (4, 6, 17), (11, 18, 6)),
    ],
)
def test_cam_peaks_at_the_blob_of_the_explained_class(spatial_dims, shape, bright, dark) -> None:
    model = BlobNet(spatial_dims)
    x = torch.from_numpy(_image(shape, bright, dark))
    cam_bright = grad_cam(model, x, "features", spatial_dims=spatial_dims, class_idx=0)
    cam_dark = grad_cam(model, x, "features", spatial_dims=spatial_dims, class_idx=1)
    for cam, blob in ((cam_bright, bright), (cam_dark, dark)):
        assert cam.shape == shape and cam.dtype == np.float32
        assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
        assert np.linalg.norm(np.subtract(_peak(cam), blob)) <= 2.5
    other = tuple(slice(max(c - 4, 0), c + 5) for c in dark)
    assert cam_bright[other].max() < 0.2  # the bright-class map ignores the dark blob


def test_batch_uses_each_images_predicted_class() -> None:
    model = BlobNet(2)
    only_bright = _image((32, 32), (8, 8), None)
    only_dark = _image((32, 32), None, (24, 24))
    logits = model(torch.from_numpy(np.stack([only_bright, only_dark])))
    assert logits.argmax(1).tolist() == [0, 1]
    model.train()
    cams = grad_cam(model, np.stack([only_bright, only_dark]), "features", spatial_dims=2)
    assert model.training  # mode restored
    assert cams.shape == (2, 32, 32)
    assert np.linalg.norm(np.subtract(_peak(cams[0]), (8, 8))) <= 2.5
    assert np.linalg.norm(np.subtract(_peak(cams[1]), (24, 24))) <= 2.5


def test_flat_map_is_zero_and_errors() -> None:
    model = BlobNet(2)
    flat = np.full((1, 16, 16), BACKGROUND, dtype=np.float32)  # no blob: both channels silent
    assert np.all(grad_cam(model, flat, "features", class_idx=0) == 0.0)
    with pytest.raises(DataError):
        grad_cam(model, flat, "no_such_layer")
    with pytest.raises(DataError):
        grad_cam(model, flat[0], "features")


def test_overlay_png_grey_pseudocolour_and_volume(tmp_path) -> None:
    from matplotlib.image import imread

    img = np.linspace(0, 1000, 32 * 48).reshape(32, 48)
    heat = np.zeros((32, 48))
    heat[10:14, 20:24] = 1.0
    rgb = overlay(img, heat, alpha=0.5)
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    grey = np.round(img / 1000 * 255)
    assert np.all(rgb[0, :, 0] == grey[0])  # cold pixels keep the grey image
    assert np.any(rgb[12, 22] != grey[12, 22])
    colour = np.zeros((32, 48, 3), dtype=np.uint8)
    colour[..., 1] = 200
    assert overlay(colour, heat)[0, 0].tolist() == [0, 200, 0]
    path = save_overlay_png(img, heat, tmp_path / "cam.png")
    assert imread(path).shape[:2] == (32, 48)
    vol = np.zeros((5, 32, 48))
    hvol = np.zeros((5, 32, 48))
    hvol[3, 5:9, 5:9] = 1.0
    assert peak_slice(hvol) == 3
    assert imread(save_overlay_png(vol, hvol, tmp_path / "cam3d.png")).shape[:2] == (32, 48)
    with pytest.raises(DataError):
        overlay(img, heat[:10])
