"""Yao et al.'s 3D CSAC-Net (cross-layer sparse atrous convolution network) and a plain 3D ResNet baseline.

Layout (the paper gives counts, not a diagram; the arrangement below is ours and reproduces the counts)::

    volume (1 x D x H x W)
      -> stem: Conv3d (stem_kernel, stem_stride), BN, ReLU, MaxPool3d 3/2     [baseline pool 1]
      -> module 1 -> module 2 -> MaxPool -> module 3 -> MaxPool -> module 4   [baseline pools 2, 3]
           |           |                      |
        subnet 1    subnet 2               subnet 3        (cross-layers, between two residual modules)
           each: Conv 1x1 (entry), then per max-pool it needs: atrous Conv3d (dilation 2), atrous Conv3d
           (dilation 4), MaxPool3d 3/2 -> down to the baseline's output resolution
      -> concat(baseline output, subnet outputs) -> GAP -> FC, ReLU, FC, ReLU, FC -> logits

Residual modules are ResNet-34's basic blocks [3, 4, 6, 3] with widths w, 2w, 4w, 8w (projection shortcuts
where the width changes). Default counts: 39 plain 3D convolutions (stem 1, residual modules 32,
projections 3, subnet entries 3), 10 atrous 3D convolutions (subnets need 2 + 2 + 1 pools, two atrous
convolutions per pool), 3 baseline max-pools, 5 subnet max-pools, 3 FC layers: the paper's numbers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.nets.resnet import ResNet
from torch import Tensor, nn

from covidscan.config import CSACNetConfig
from covidscan.errors import ModelConfigError
from covidscan.models.blocks import conv_output_size
from covidscan.models.card import CardMixin, InputSpec, ModelCard, default_labels
from covidscan.models.cnncf import normalise_size

__all__ = ["AtrousSubnet", "BasicBlock3D", "CSACBaseline", "CSACNet3D", "ResNet3D"]


def _cbr(c_in: int, c_out: int, kernel: int, *, stride: int | Sequence[int] = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel // 2)
    return [nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=pad, dilation=dilation, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]


def _pool() -> nn.MaxPool3d:
    return nn.MaxPool3d(kernel_size=3, stride=2, padding=1)


class BasicBlock3D(nn.Module):
    """ResNet basic block in 3D: Conv 3, BN, ReLU, Conv 3, BN, + shortcut (1x1 conv + BN when widths differ), ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_cbr(in_channels, out_channels, 3),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
        )
        self.shortcut: nn.Module = (
            nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels))
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class AtrousSubnet(nn.Module):
    """A cross-layer subnet: Conv 1x1 entry, then per needed max-pool: the atrous convs and a MaxPool 3/2.

    With no pool needed (the tap is already at the output resolution) it has one unit of atrous convs.

    Args:
        in_channels: channels of the tapped residual module.
        width: channels inside the subnet (and of its output).
        num_pools: max-pools down to the baseline's output resolution.
        dilations: one atrous Conv 3x3x3 per entry, in each unit.
    """

    def __init__(self, in_channels: int, width: int, num_pools: int, dilations: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = _cbr(in_channels, width, 1)
        for unit in range(max(1, num_pools)):
            for d in dilations:
                layers += _cbr(width, width, 3, dilation=int(d))
            if unit < num_pools:
                layers.append(_pool())
        self.body = nn.Sequential(*layers)
        self.num_pools = num_pools

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class CSACBaseline(nn.Module):
    """The 3D ResNet trunk of CSAC-Net; returns its output and every residual module's output (the taps).

    Args:
        in_channels: input channels (1).
        base_width: width of module 1 (module k has base_width * 2^(k-1)).
        blocks: basic blocks per residual module.
        pooled_modules: 0-based indices of the modules preceded by a MaxPool 3/2.
        stem_kernel: stem conv kernel.
        stem_stride: stem conv stride, (z, y, x).
    """

    def __init__(
        self, in_channels: int, base_width: int, blocks: Sequence[int], pooled_modules: Sequence[int], stem_kernel: int, stem_stride: Sequence[int]
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(in_channels, base_width, stem_kernel, stride=tuple(stem_stride)), _pool())
        self.pools = nn.ModuleList([_pool() if i in pooled_modules else nn.Identity() for i in range(len(blocks))])
        stages = []
        c = base_width
        self.widths: list[int] = []
        for i, n in enumerate(blocks):
            w = base_width * 2**i
            stages.append(nn.Sequential(*[BasicBlock3D(c if j == 0 else w, w) for j in range(n)]))
            c = w
            self.widths.append(w)
        self.stages = nn.ModuleList(stages)
        self.out_channels = c

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.stem(x)
        taps: list[Tensor] = []
        for pool, stage in zip(self.pools, self.stages):
            x = stage(pool(x))
            taps.append(x)
        return x, taps


class CSACNet3D(CardMixin, nn.Module):
    """3D CSAC-Net: the baseline, ``cross_layers`` atrous subnets, concat, GAP, three FC layers.

    Args:
        num_classes: output classes (2: covid19 vs the rest).
        in_channels: input channels (1).
        input_size: (slices, rows, cols) the model is configured for.
        base_width: width of the first residual module.
        cross_layers: subnets, tapping the outputs of modules 1..cross_layers (at most modules - 1).
        blocks: basic blocks per residual module.
        pooled_modules: 0-based indices of the modules preceded by a baseline max-pool.
        stem_kernel: stem conv kernel.
        stem_stride: stem conv stride (int or (z, y, x)).
        dilations: dilation of each atrous conv in a subnet unit.
        subnet_width: channels of every subnet (default base_width).
        fc_hidden: hidden FC widths (default (8, 2) x base_width; len + 1 FC layers).

    Raises:
        ModelConfigError: inconsistent layout or an input whose maps would go below 1x1x1.
    """

    def __init__(
        self,
        *,
        num_classes: int = 2,
        in_channels: int = 1,
        input_size: int | Sequence[int] = (64, 512, 512),
        base_width: int = 32,
        cross_layers: int = 3,
        blocks: Sequence[int] = (3, 4, 6, 3),
        pooled_modules: Sequence[int] = (2, 3),
        stem_kernel: int = 3,
        stem_stride: int | Sequence[int] = (1, 2, 2),
        dilations: Sequence[int] = (2, 4),
        subnet_width: int | None = None,
        fc_hidden: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        owner = "CSACNet3D"
        size = normalise_size(input_size, 3, owner)
        stride = (int(stem_stride),) * 3 if isinstance(stem_stride, int) else tuple(int(s) for s in stem_stride)
        subnet_width = subnet_width or base_width
        fc_hidden = list(fc_hidden) if fc_hidden is not None else [8 * base_width, 2 * base_width]
        n_mod = len(blocks)
        checks = [
            (n_mod >= 2 and all(int(b) >= 1 for b in blocks), "blocks", f"at least two residual modules of >= 1 block, got {list(blocks)}"),
            (1 <= cross_layers <= n_mod - 1, "cross_layers", f"between 1 and len(blocks) - 1 = {n_mod - 1} (one subnet between two modules), got {cross_layers}"),
            (all(0 <= int(i) < n_mod for i in pooled_modules) and len(set(pooled_modules)) == len(pooled_modules), "pooled_modules",
             f"distinct module indices in [0, {n_mod - 1}], got {list(pooled_modules)}"),
            (len(stride) == 3 and all(s >= 1 for s in stride), "stem_stride", f"an int or 3 ints >= 1, got {stem_stride!r}"),
            (stem_kernel >= 1 and stem_kernel % 2 == 1, "stem_kernel", f"an odd int >= 1, got {stem_kernel}"),
            (len(dilations) >= 1 and all(int(d) >= 1 for d in dilations), "dilations", f"at least one dilation >= 1, got {list(dilations)}"),
            (min(base_width, subnet_width, num_classes, in_channels) >= 1, "base_width/subnet_width/num_classes/in_channels", "all >= 1"),
            (all(int(h) >= 1 for h in fc_hidden), "fc_hidden", f"positive widths, got {fc_hidden}"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ModelConfigError(f"{owner}: {key} must be {expected}")
        self._check_sizes(owner, size, stride, stem_kernel, [i in pooled_modules for i in range(n_mod)])

        self.baseline = CSACBaseline(in_channels, base_width, [int(b) for b in blocks], [int(i) for i in pooled_modules], stem_kernel, stride)
        pooled = [i in pooled_modules for i in range(n_mod)]
        self.subnets = nn.ModuleList(
            [AtrousSubnet(self.baseline.widths[k], subnet_width, sum(pooled[k + 1 :]), dilations) for k in range(cross_layers)]
        )
        self.pool = nn.AdaptiveAvgPool3d(1)
        widths = [self.baseline.out_channels + cross_layers * subnet_width, *fc_hidden]
        fcs: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            fcs += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        fcs.append(nn.Linear(widths[-1], num_classes))
        self.classifier = nn.Sequential(*fcs)
        last_pool = max((int(i) for i in pooled_modules), default=None)
        # Grad-CAM target: the last 3D max-pool of the baseline (Yao et al. 2021, Fig. 3).
        self.target_layer = f"baseline.pools.{last_pool}" if last_pool is not None else "baseline.stem.3"
        self.cross_layers = cross_layers
        self.card = ModelCard(
            arch="csacnet", task="classification", class_labels=default_labels(num_classes), input_spec=InputSpec(in_channels, size, (0.0, 1.0), "ct_volume")
        )

    @staticmethod
    def _check_sizes(owner: str, size: tuple[int, ...], stride: tuple[int, ...], kernel: int, pooled: list[bool]) -> None:
        shown = "x".join(str(n) for n in size)

        def refuse(where: str, s: tuple[int, ...]) -> None:
            got = "x".join(str(n) for n in s)
            raise ModelConfigError(
                f"{owner}: {where} would get a {got} feature map and shrink it below 1x1x1 for input_size={shown}; "
                "lower stem_stride, drop entries of pooled_modules, or use a larger volume"
            )

        if any(n < st for n, st in zip(size, stride)):
            refuse("the stem conv (stem_stride)", size)
        s = tuple(conv_output_size(n, kernel, st, kernel // 2) for n, st in zip(size, stride))
        steps = [("the stem max-pool", True)] + [(f"the max-pool before module {i + 1} (pooled_modules)", p) for i, p in enumerate(pooled)]
        for where, is_pool in steps:
            if not is_pool:
                continue
            if min(s) < 2:
                refuse(where, s)
            s = tuple(conv_output_size(n, 3, 2, 1) for n in s)
        if min(s) < 1:  # pragma: no cover - guarded above
            refuse("the output", s)

    @classmethod
    def from_config(cls, cfg: CSACNetConfig, *, num_classes: int, in_channels: int, input_size: int | Sequence[int]) -> "CSACNet3D":
        """Build from ``models.csacnet``."""
        return cls(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            base_width=cfg.base_width,
            cross_layers=cfg.cross_layers,
            blocks=cfg.blocks,
            pooled_modules=cfg.pooled_modules,
            stem_kernel=cfg.stem_kernel,
            stem_stride=cfg.stem_stride if len(cfg.stem_stride) != 1 else cfg.stem_stride[0],
            dilations=cfg.dilations,
            subnet_width=cfg.subnet_width,
            fc_hidden=cfg.fc_hidden,
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """The merged feature map: baseline output concatenated with the subnets' outputs."""
        out, taps = self.baseline(x)
        feats = [out]
        for k, subnet in enumerate(self.subnets):
            feats.append(subnet(taps[k]))
        return torch.cat(feats, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (batch, num_classes)."""
        return self.classifier(torch.flatten(self.pool(self.forward_features(x)), 1))


class ResNet3D(CardMixin, nn.Module):
    """The plain 3D ResNet baseline of Yao et al. 2021: MONAI's ResNet (basic blocks, ResNet-18 by default).

    Args:
        num_classes: output classes.
        in_channels: input channels (1).
        input_size: (slices, rows, cols) the model is configured for.
        base_width: widths (w, 2w, 4w, 8w) of the four layers (MONAI's resnet18 uses 64).
        layers: basic blocks per layer.
        conv1_t_stride: stem stride along z (1 keeps thick-slice volumes deep enough).
    """

    target_layer = "net.layer4"

    def __init__(
        self,
        *,
        num_classes: int = 2,
        in_channels: int = 1,
        input_size: int | Sequence[int] = (64, 512, 512),
        base_width: int = 64,
        layers: Sequence[int] = (2, 2, 2, 2),
        conv1_t_stride: int = 1,
    ) -> None:
        super().__init__()
        size = normalise_size(input_size, 3, "ResNet3D")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ModelConfigError(f"ResNet3D: resnet3d_layers must be 4 positive block counts, got {list(layers)}")
        self.net = ResNet(
            block="basic",
            layers=[int(n) for n in layers],
            block_inplanes=[base_width * 2**i for i in range(4)],
            spatial_dims=3,
            n_input_channels=in_channels,
            conv1_t_stride=conv1_t_stride,
            num_classes=num_classes,
        )
        self.card = ModelCard(
            arch="resnet3d", task="classification", class_labels=default_labels(num_classes), input_spec=InputSpec(in_channels, size, (0.0, 1.0), "ct_volume")
        )

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (batch, num_classes)."""
        return self.net(x)
