"""The building blocks of Liang et al.'s frameworks (SPEC.md section 3): ResBlock-A, its bottleneck variant,
ResBlock-B, a residual stage made of them, the Control Gate Block and the regressor block.

Every block takes ``spatial_dims`` (2 for CNNCF/CNNRF; 3 works too), so the same code builds 2D and 3D
networks. Strides, paddings and widths are arguments; the defaults are the paper's.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import Tensor, nn

__all__ = [
    "BottleneckResBlockA",
    "ControlGateBlock",
    "RegressorBlock",
    "ResBlockA",
    "ResBlockB",
    "ResidualStage",
    "conv_output_size",
    "xavier_init_",
]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution or max-pool along one axis (PyTorch's floor arithmetic)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm)


def xavier_init_(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for convolutions and linear layers; norms to (1, 0).

    The paper initialises every network with Xavier (Glorot) initialisation. The constructors do not:
    the training loop applies this to a fresh model (``init="xavier"``, the default) before the first
    epoch, after seeding, and never when it resumes from a checkpoint. A model built and used without
    the loop (serving, evaluation) loads its weights.

    Args:
        module: the network to initialise in place (buffers such as a gate state are not touched).

    Returns:
        The same module.
    """
    for m in module.modules():
        if isinstance(m, _CONV_LINEAR):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")


class ResBlockA(nn.Module):
    """ResBlock-A: two inputs, two outputs of equal size (Liang et al. 2020, Fig. 6a).

    Upper branch on input 1: MaxPool 3 (stride, padding), Conv 1x1 (``out_channels``), BN.
    Bottom branch on input 2: Conv 3 (stride, padding), BN, ReLU, Conv 3 (stride 1, padding 1), BN.
    Output 1 is the sum of the branches, output 2 is ReLU(sum). The first block of a chain gets (x, x):
    call it with one tensor.

    Args:
        in_channels: channels of both inputs.
        out_channels: channels of both outputs.
        spatial_dims: 2 or 3.
        stride: stride of the max-pool and of the first 3x3 conv (paper: 2).
        padding: padding of the max-pool and of the first 3x3 conv (paper: 1; at most 1).
    """

    kernel = 3

    def __init__(self, in_channels: int, out_channels: int, *, spatial_dims: int = 2, stride: int = 2, padding: int = 1) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got in={in_channels}, out={out_channels}")
        if stride < 1 or not 0 <= padding <= self.kernel // 2:
            raise ValueError(f"stride must be >= 1 and padding 0 or 1, got stride={stride}, padding={padding}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.spatial_dims, self.stride, self.padding = spatial_dims, stride, padding
        conv, norm, pool = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims], Pool[Pool.MAX, spatial_dims]
        self.upper = nn.Sequential(
            pool(kernel_size=self.kernel, stride=stride, padding=padding),
            conv(in_channels, out_channels, kernel_size=1, bias=False),
            norm(out_channels),
        )
        self.bottom = self._bottom_branch(conv, norm)

    def _bottom_branch(self, conv: type[nn.Module], norm: type[nn.Module]) -> nn.Sequential:
        c_in, c_out = self.in_channels, self.out_channels
        return nn.Sequential(
            conv(c_in, c_out, kernel_size=3, stride=self.stride, padding=self.padding, bias=False),
            norm(c_out),
            nn.ReLU(inplace=True),
            conv(c_out, c_out, kernel_size=3, stride=1, padding=1, bias=False),
            norm(c_out),
        )

    def output_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size of the outputs for an input of spatial size ``size``."""
        return tuple(conv_output_size(n, self.kernel, self.stride, self.padding) for n in size)

    def _sum(self, x1: Tensor, x2: Optional[Tensor]) -> Tensor:
        if x2 is None:
            x2 = x1
        return self.upper(x1) + self.bottom(x2)

    def forward(self, x1: Tensor, x2: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Return (output 1 = sum, output 2 = ReLU(sum)); ``x2`` defaults to ``x1``."""
        s = self._sum(x1, x2)
        return s, torch.relu(s)


class BottleneckResBlockA(ResBlockA):
    """ResBlock-A whose bottom branch is a bottleneck (teachers TS3/TS4, (code)).

    Bottom branch: Conv 1x1 (C_out / ratio), BN, ReLU, Conv 3 (stride, padding), BN, ReLU, Conv 1x1
    (C_out), BN. The upper branch and the two outputs are those of :class:`ResBlockA`.

    Args:
        in_channels: channels of both inputs.
        out_channels: channels of both outputs.
        spatial_dims: 2 or 3.
        stride: stride of the max-pool and of the 3x3 conv.
        padding: padding of the max-pool and of the 3x3 conv (at most 1).
        ratio: bottleneck ratio (assumed 4, as in ResNet).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, spatial_dims: int = 2, stride: int = 2, padding: int = 1, ratio: int = 4
    ) -> None:
        if ratio < 1:
            raise ValueError(f"bottleneck ratio must be >= 1, got {ratio}")
        self.ratio = ratio
        super().__init__(in_channels, out_channels, spatial_dims=spatial_dims, stride=stride, padding=padding)

    def _bottom_branch(self, conv: type[nn.Module], norm: type[nn.Module]) -> nn.Sequential:
        c_in, c_out = self.in_channels, self.out_channels
        mid = max(1, c_out // self.ratio)
        return nn.Sequential(
            conv(c_in, mid, kernel_size=1, bias=False),
            norm(mid),
            nn.ReLU(inplace=True),
            conv(mid, mid, kernel_size=3, stride=self.stride, padding=self.padding, bias=False),
            norm(mid),
            nn.ReLU(inplace=True),
            conv(mid, c_out, kernel_size=1, bias=False),
            norm(c_out),
        )


class ResBlockB(ResBlockA):
    """ResBlock-B: ResBlock-A with a single output, the activated one (Liang et al. 2020, Fig. 6b)."""

    def forward(self, x1: Tensor, x2: Optional[Tensor] = None) -> Tensor:  # type: ignore[override]
        """Return ReLU(upper(x1) + bottom(x2)); ``x2`` defaults to ``x1``."""
        return torch.relu(self._sum(x1, x2))


class ResidualStage(nn.Module):
    """A chain of ResBlock-A followed by ResBlock-B (stage I without its gate, or stage II).

    The first ResBlock-A gets (x, x); each next block gets the previous block's (output 1, output 2);
    the first ResBlock-B gets the last ResBlock-A's two outputs, later ones (x, x). The stage returns
    the last activated output.

    Args:
        in_channels: input channels.
        widths_a: output channels of each ResBlock-A (their number is M or N).
        width_b: output channels of every ResBlock-B.
        num_b: number of ResBlock-B (L; 1 in stage II).
        spatial_dims: 2 or 3.
        stride_a: stride of ResBlock-A.
        stride_b: stride of ResBlock-B.
        padding: padding of both block types.
        bottleneck: use :class:`BottleneckResBlockA` for the A blocks.
        bottleneck_ratio: the bottleneck ratio.
    """

    def __init__(
        self,
        in_channels: int,
        widths_a: Sequence[int],
        width_b: int,
        num_b: int = 1,
        *,
        spatial_dims: int = 2,
        stride_a: int = 2,
        stride_b: int = 2,
        padding: int = 1,
        bottleneck: bool = False,
        bottleneck_ratio: int = 4,
    ) -> None:
        super().__init__()
        if len(widths_a) < 1:
            raise ValueError("a residual stage needs at least one ResBlock-A")
        blocks_a = []
        c = in_channels
        for w in widths_a:
            if bottleneck:
                blocks_a.append(
                    BottleneckResBlockA(c, w, spatial_dims=spatial_dims, stride=stride_a, padding=padding, ratio=bottleneck_ratio)
                )
            else:
                blocks_a.append(ResBlockA(c, w, spatial_dims=spatial_dims, stride=stride_a, padding=padding))
            c = w
        blocks_b = []
        for _ in range(num_b):
            blocks_b.append(ResBlockB(c, width_b, spatial_dims=spatial_dims, stride=stride_b, padding=padding))
            c = width_b
        self.blocks_a = nn.ModuleList(blocks_a)
        self.blocks_b = nn.ModuleList(blocks_b)
        self.out_channels = c

    def blocks(self) -> list[ResBlockA]:
        """The blocks in order (A then B)."""
        return [*self.blocks_a, *self.blocks_b]

    def output_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size of the stage output for an input of spatial size ``size``."""
        out = tuple(size)
        for block in self.blocks():
            out = block.output_size(out)
        return out

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x, x
        for block in self.blocks_a:
            x1, x2 = block(x1, x2)
        out = x2
        first = True
        for block in self.blocks_b:
            out = block(x1, x2) if first else block(out, out)
            first = False
        return out


class ControlGateBlock(nn.Module):
    """Control Gate Block (Liang et al. 2020, Fig. 6c): an auxiliary classifier on stage I's output and a latch.

    The predictor is GAP + Linear -> logits (softmax/CE are the loss's job, weighted by lambda_aux).
    After each validation pass the training loop calls :meth:`update` with the auxiliary head's
    sensitivity: step(sens >= ths_sens) feeds a counter that counts consecutive passing updates and
    resets on a failing one; the synapse opens the gate once counter >= ths_count, and it then stays
    open. ``gate`` and ``counter`` are buffers, so they travel with ``state_dict``.

    In training mode :meth:`apply_gate` multiplies the next stage's output by the gate (0 or 1); in
    eval mode the gate is open (the paper's inference).

    Args:
        in_channels: channels of the stage I output S1.
        num_classes: classes of the auxiliary head.
        spatial_dims: 2 or 3.
        ths_sens: sensitivity threshold of the predictor's step function (assumed 0.9).
        ths_count: consecutive passing validations that open the gate (assumed 3).
    """

    def __init__(self, in_channels: int, num_classes: int, *, spatial_dims: int = 2, ths_sens: float = 0.9, ths_count: int = 3) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if not 0.0 <= ths_sens <= 1.0:
            raise ValueError(f"ths_sens must be in [0, 1], got {ths_sens}")
        if ths_count < 1:
            raise ValueError(f"ths_count must be >= 1, got {ths_count}")
        self.ths_sens = float(ths_sens)
        self.ths_count = int(ths_count)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.fc = nn.Linear(in_channels, num_classes)
        self.register_buffer("gate", torch.zeros(()))
        self.register_buffer("counter", torch.zeros((), dtype=torch.long))

    def forward(self, s1: Tensor) -> Tensor:
        """Auxiliary logits (batch, num_classes) from the stage I output."""
        return self.fc(torch.flatten(self.pool(s1), 1))

    def apply_gate(self, features: Tensor) -> Tensor:
        """F'' = features x g in training mode; unchanged in eval mode (gate open at inference)."""
        if self.training:
            return features * self.gate
        return features

    @property
    def is_open(self) -> bool:
        """Whether the latch has opened (independent of train/eval mode)."""
        return bool(self.gate.item() > 0.5)

    @property
    def count(self) -> int:
        """The current number of consecutive passing validations."""
        return int(self.counter.item())

    @torch.no_grad()
    def update(self, sensitivity: float) -> bool:
        """Feed one validation pass's auxiliary sensitivity; return whether the gate is open.

        Args:
            sensitivity: the auxiliary head's sensitivity on the validation set; NaN (no positives)
                counts as a failing pass.
        """
        sens = float(sensitivity)
        passed = not math.isnan(sens) and sens >= self.ths_sens
        if passed:
            self.counter.add_(1)
        else:
            self.counter.zero_()
        if int(self.counter.item()) >= self.ths_count:
            self.gate.fill_(1.0)
        return self.is_open

    @torch.no_grad()
    def open(self) -> None:
        """Open the gate now (e.g. to fine-tune the whole network, or in tests)."""
        self.gate.fill_(1.0)

    @torch.no_grad()
    def reset(self) -> None:
        """Close the gate and clear the counter."""
        self.gate.zero_()
        self.counter.zero_()

    def extra_repr(self) -> str:
        return f"ths_sens={self.ths_sens}, ths_count={self.ths_count}"


class RegressorBlock(nn.Module):
    """The regressor block of CNNRF (Liang et al. 2020, Fig. 6d).

    Main path: Conv 3x3, BN, ReLU, global average pooling, Linear1, ReLU, Linear2. Skip path: Conv 1x1
    with as many kernels as Linear2's output size, global average pooling. Sum, ReLU, Linear3.

    Args:
        in_channels: channels of the input feature map.
        conv_channels: channels of the main path's 3x3 conv.
        hidden1: Linear1's output size.
        hidden2: Linear2's output size (= the skip conv's kernels).
        out_features: Linear3's output size (5 clinical indicators).
        spatial_dims: 2 or 3.
    """

    def __init__(
        self, in_channels: int, *, conv_channels: int, hidden1: int, hidden2: int, out_features: int = 5, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        gap = Pool[Pool.ADAPTIVEAVG, spatial_dims]
        self.main = nn.Sequential(
            conv(in_channels, conv_channels, kernel_size=3, padding=1, bias=False),
            norm(conv_channels),
            nn.ReLU(inplace=True),
            gap(1),
            nn.Flatten(1),
            nn.Linear(conv_channels, hidden1),
            nn.ReLU(inplace=True),
            nn.Linear(hidden1, hidden2),
        )
        self.skip = nn.Sequential(conv(in_channels, hidden2, kernel_size=1), gap(1), nn.Flatten(1))
        self.out = nn.Linear(hidden2, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.main(x) + self.skip(x)))
