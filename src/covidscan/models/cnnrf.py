"""CNNRF, Liang et al.'s regression framework: stem + stage II + regressor block -> 5 clinical indicators.

The input is one lesion crop (suspected area) resized to 64x64 (code); a case's prediction is the mean
over its crops (the training/evaluation code averages). Outputs are the five min-max normalised
indicators (white blood cells, neutrophil %, lymphocyte %, procalcitonin, CRP).
"""

from __future__ import annotations

from typing import Sequence

from monai.networks.layers.factories import Conv, Norm
from torch import Tensor, nn

from covidscan.config import ModelsConfig
from covidscan.errors import ModelConfigError
from covidscan.models.blocks import RegressorBlock, ResidualStage, conv_output_size
from covidscan.models.card import CardMixin, InputSpec, ModelCard
from covidscan.models.cnncf import check_stage_sizes, normalise_size

__all__ = ["CLINICAL_INDICATORS", "CNNRF"]

CLINICAL_INDICATORS: tuple[str, ...] = ("wbc", "neutrophil_pct", "lymphocyte_pct", "procalcitonin", "crp")


class CNNRF(CardMixin, nn.Module):
    """Stem (Conv 3x3 s1, BN, ReLU) + stage II (N ResBlock-A, 1 ResBlock-B) + regressor block.

    Args:
        in_channels: input channels of a crop (3 when pseudo-coloured).
        input_size: crop size the model is configured for (64 in the code).
        num_outputs: regression outputs (5 indicators).
        stem_width: stem channels.
        widths: output channels of the N ResBlock-A.
        width_b: output channels of the ResBlock-B.
        stride_a: ResBlock-A stride.
        stride_b: ResBlock-B stride.
        padding: padding of both block types.
        conv_channels: regressor 3x3 conv channels (default: width_b).
        hidden1: regressor Linear1 output (default: width_b / 2).
        hidden2: regressor Linear2 output = skip 1x1 kernels (default: width_b / 4).
        spatial_dims: 2.

    Raises:
        ModelConfigError: a map that would go below 1x1, or non-positive widths.
    """

    target_layer = "stage2"

    def __init__(
        self,
        *,
        in_channels: int = 3,
        input_size: int | Sequence[int] = 64,
        num_outputs: int = 5,
        stem_width: int = 64,
        widths: Sequence[int] = (512, 512),
        width_b: int = 512,
        stride_a: int = 2,
        stride_b: int = 2,
        padding: int = 1,
        conv_channels: int | None = None,
        hidden1: int | None = None,
        hidden2: int | None = None,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        owner = "CNNRF"
        size = normalise_size(input_size, spatial_dims, owner)
        conv_channels = conv_channels or width_b
        hidden1 = hidden1 or max(1, width_b // 2)
        hidden2 = hidden2 or max(1, width_b // 4)
        for pname, value in (("in_channels", in_channels), ("num_outputs", num_outputs), ("stem_width", stem_width), ("width_b", width_b),
                             ("stride_a", stride_a), ("stride_b", stride_b), ("conv_channels", conv_channels), ("hidden1", hidden1), ("hidden2", hidden2)):
            if int(value) < 1:
                raise ModelConfigError(f"{owner}: {pname} must be >= 1, got {value}")
        if not widths or any(int(w) < 1 for w in widths):
            raise ModelConfigError(f"{owner}: widths must be one positive width per ResBlock-A, got {list(widths)}")
        if padding not in (0, 1):
            raise ModelConfigError(f"{owner}: padding must be 0 or 1, got {padding}")
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        self.stem = nn.Sequential(conv(in_channels, stem_width, kernel_size=3, stride=1, padding=1, bias=False), norm(stem_width), nn.ReLU(inplace=True))
        self.stage2 = ResidualStage(
            stem_width, [int(w) for w in widths], width_b, 1, spatial_dims=spatial_dims, stride_a=stride_a, stride_b=stride_b, padding=padding
        )
        self.regressor = RegressorBlock(
            self.stage2.out_channels, conv_channels=conv_channels, hidden1=hidden1, hidden2=hidden2, out_features=num_outputs, spatial_dims=spatial_dims
        )
        s = tuple(conv_output_size(n, 3, 1, 1) for n in size)
        s = check_stage_sizes(owner, "stage II", self.stage2, s, ("stride_a", "stride_b"), size)
        self.feature_shapes = {"stage2": (self.stage2.out_channels, *s)}
        labels = CLINICAL_INDICATORS if num_outputs == len(CLINICAL_INDICATORS) else tuple(f"output_{i}" for i in range(num_outputs))
        self.card = ModelCard(arch="cnnrf", task="regression", class_labels=labels, input_spec=InputSpec(in_channels, size, (0.0, 1.0), "lesion_crop"))

    @classmethod
    def from_config(cls, models: ModelsConfig, *, in_channels: int, input_size: int | Sequence[int], num_outputs: int = 5) -> "CNNRF":
        """Stage II of width ``models.cnnrf_width`` (N, strides, padding and stem from ``models.cnncf``);
        regressor conv = width, Linear1 = width/2, Linear2 = width/4 (assumed)."""
        c, w = models.cnncf, models.cnnrf_width
        return cls(
            in_channels=in_channels,
            input_size=input_size,
            num_outputs=num_outputs,
            stem_width=c.stem_width,
            widths=[w] * c.N,
            width_b=w,
            stride_a=c.stride_a,
            stride_b=c.stride_b,
            padding=c.padding,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(batch, num_outputs) predictions for a batch of crops."""
        return self.regressor(self.stage2(self.stem(x)))
