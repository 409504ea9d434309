"""CNNCF, Liang et al.'s classification framework, and its four teachers (SPEC.md section 3).

CNNCF = [CT front] + stem + Q x (stage I + Control Gate Block) + stage II + head::

    x -> [Conv 1x1 ct_slices->3, groups=3] -> stem (Conv 3x3 s1, BN, ReLU)
      -> stage I (M ResBlock-A, L ResBlock-B) -> CGB (aux logits)            (Q times)
      -> stage II (N ResBlock-A, 1 ResBlock-B) x gate -> GAP -> FC -> logits

Modules: ``front``, ``stem``, ``stages1`` (Q stage I), ``gates`` (Q CGBs), ``stage2``, ``head``; methods
``stage1(x)`` (F'), ``forward_features(x)`` (every intermediate), ``forward_with_aux(x)`` (training).

The gate multiplies stage II's output (F'' = S2(F') x g). While it is closed (training mode) stage II is
not run at all and contributes exactly zero, and the main logits are the head's (detached) bias, so only
stage I and the auxiliary head learn (stage-wise training); in eval mode the gate is open. Sizes are checked at construction for the configured input.
"""

from __future__ import annotations

from typing import Sequence

from monai.networks.layers.factories import Conv, Norm, Pool
from torch import Tensor, nn

from covidscan.config import CNNCFConfig, ModelsConfig
from covidscan.errors import ModelConfigError
from covidscan.models.blocks import ControlGateBlock, ResidualStage, conv_output_size
from covidscan.models.card import CardMixin, InputSpec, ModelCard, default_labels

__all__ = ["CNNCF", "check_stage_sizes", "normalise_size", "teacher_config"]


def normalise_size(input_size: int | Sequence[int], spatial_dims: int, owner: str) -> tuple[int, ...]:
    """An int or a sequence as a ``spatial_dims``-tuple of positive ints (ModelConfigError otherwise)."""
    size = (int(input_size),) * spatial_dims if isinstance(input_size, int) else tuple(int(n) for n in input_size)
    if len(size) != spatial_dims or any(n < 1 for n in size):
        raise ModelConfigError(f"{owner}: input_size must be a positive int or {spatial_dims} positive ints, got {input_size!r}")
    return size


def check_stage_sizes(
    owner: str, stage_name: str, stage: ResidualStage, size: tuple[int, ...], stride_params: tuple[str, str], input_size: tuple[int, ...]
) -> tuple[int, ...]:
    """Walk a stage's blocks from ``size``; refuse a block whose map would shrink below 1x1.

    A strided block needs an input of at least ``stride`` pixels along every axis (a 1x1 map cannot be
    halved); any output below 1 is refused too.

    Args:
        owner: model name for the message.
        stage_name: "stage I" or "stage II" (with a repetition number where useful).
        stage: the stage to walk.
        size: spatial size of the stage input.
        stride_params: the parameter names of the A and B strides, for the message.
        input_size: the model's configured input size, for the message.

    Returns:
        The stage's output size.
    """
    n_a = len(stage.blocks_a)
    for i, block in enumerate(stage.blocks()):
        kind, idx, param = ("ResBlock-A", i + 1, stride_params[0]) if i < n_a else ("ResBlock-B", i - n_a + 1, stride_params[1])
        out = block.output_size(size)
        if (block.stride > 1 and min(size) < block.stride) or min(out) < 1:
            shown = "x".join(str(n) for n in size)
            strides = [f"{stride_params[0]}={stage.blocks_a[0].stride}"]
            if stage.blocks_b:
                strides.append(f"{stride_params[1]}={stage.blocks_b[0].stride}")
            raise ModelConfigError(
                f"{owner}: {stage_name} {kind} {idx} ({param}={block.stride}) would get a {shown} feature map and shrink it "
                f"below 1x1 for input_size={'x'.join(str(n) for n in input_size)}; lower {' or '.join(reversed(strides))}, "
                "the block counts (M, L, N, Q) or use a larger input"
            )
        size = out
    return size


def _stretch(widths: Sequence[int], n: int) -> list[int]:
    """Widths for n blocks: repeat the last width to grow, drop middle ones (keep the last) to shrink."""
    widths = list(widths)
    if len(widths) >= n:
        return widths[: n - 1] + [widths[-1]]
    return widths + [widths[-1]] * (n - len(widths))


def teacher_config(name: str, models: ModelsConfig) -> CNNCFConfig:
    """The CNNCFConfig of teacher ``name``: the student's config with the teacher's (M, L, N, bottleneck).

    Widths are stretched or cut to the teacher's M and N (the last width repeats), so a profile that
    narrows the student narrows the teachers too.

    Raises:
        ModelConfigError: ``name`` is not in ``models.teacher_archs``.
    """
    if name not in models.teacher_archs:
        raise ModelConfigError(f"unknown teacher '{name}'; models.teacher_archs defines {sorted(models.teacher_archs)}")
    arch = models.teacher_archs[name]
    base = models.cnncf
    return base.model_copy(
        update={
            "M": arch.M,
            "L": arch.L,
            "N": arch.N,
            "bottleneck": arch.bottleneck,
            "widths_stage1": _stretch(base.widths_stage1, arch.M),
            "widths_stage2": _stretch(base.widths_stage2, arch.N),
        }
    )


class CNNCF(CardMixin, nn.Module):
    """The classification framework of Liang et al. 2020 (also the teachers TS1-TS4 with other M, L, N).

    Args:
        num_classes: output classes C.
        in_channels: 3 (pseudo-coloured image), 1 (grey), or a multiple of 3 above 3 for a CT stack: then a
            trainable 1x1 conv with groups=3 maps the slices to 3 channels (each group of contiguous
            slices becomes one channel).
        input_size: the spatial size the model is configured for (int or tuple); used to refuse
            configurations whose maps would shrink below 1x1 and for the model card.
        Q: stage I repetitions.
        L: ResBlock-B per stage I.
        M: ResBlock-A per stage I.
        N: ResBlock-A in stage II.
        stem_width: stem channels (paper 64).
        widths_stage1: output channels of stage I's M ResBlock-A.
        width_stage1_b: output channels of stage I's ResBlock-B.
        widths_stage2: output channels of stage II's N ResBlock-A.
        width_stage2_b: output channels of stage II's ResBlock-B.
        stride_a: ResBlock-A stride.
        stride_b: ResBlock-B stride.
        padding: padding of both block types (0 or 1).
        bottleneck: bottleneck ResBlock-A (teachers TS3/TS4).
        bottleneck_ratio: bottleneck width = C_out / ratio.
        ths_sens: CGB sensitivity threshold.
        ths_count: CGB consecutive-pass count.
        lambda_aux: weight of the auxiliary CE (stored for the training loop).
        spatial_dims: 2 (the paper); 3 builds the same network in 3D.

    Raises:
        ModelConfigError: widths that do not match M/N, bad channels, or maps that would go below 1x1.
    """

    target_layer = "stage2"  # Grad-CAM target (MONAI GradCAM target_layers): the last stage's output

    def __init__(
        self,
        *,
        num_classes: int = 2,
        in_channels: int = 3,
        input_size: int | Sequence[int] = 512,
        Q: int = 1,
        L: int = 1,
        M: int = 2,
        N: int = 2,
        stem_width: int = 64,
        widths_stage1: Sequence[int] = (128, 256),
        width_stage1_b: int = 256,
        widths_stage2: Sequence[int] = (512, 512),
        width_stage2_b: int = 512,
        stride_a: int = 2,
        stride_b: int = 2,
        padding: int = 1,
        bottleneck: bool = False,
        bottleneck_ratio: int = 4,
        ths_sens: float = 0.9,
        ths_count: int = 3,
        lambda_aux: float = 1.0,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        owner = "CNNCF"
        size = normalise_size(input_size, spatial_dims, owner)
        for pname, value, low in (("Q", Q, 1), ("L", L, 0), ("M", M, 1), ("N", N, 1), ("num_classes", num_classes, 1),
                                  ("stem_width", stem_width, 1), ("width_stage1_b", width_stage1_b, 1),
                                  ("width_stage2_b", width_stage2_b, 1), ("stride_a", stride_a, 1), ("stride_b", stride_b, 1)):
            if int(value) < low:
                raise ModelConfigError(f"{owner}: {pname} must be >= {low}, got {value}")
        if padding not in (0, 1):
            raise ModelConfigError(f"{owner}: padding must be 0 or 1 (a 3x3 max-pool allows at most 1), got {padding}")
        for pname, widths, count_name, count in (("widths_stage1", widths_stage1, "M", M), ("widths_stage2", widths_stage2, "N", N)):
            if len(widths) != count:
                raise ModelConfigError(
                    f"{owner}: {pname} has {len(widths)} entries {list(widths)} but {count_name}={count}; give exactly one width per ResBlock-A"
                )
            if any(int(w) < 1 for w in widths):
                raise ModelConfigError(f"{owner}: {pname} must be positive, got {list(widths)}")
        if in_channels < 1 or (in_channels not in (1, 3) and in_channels % 3 != 0):
            raise ModelConfigError(
                f"{owner}: in_channels={in_channels}; expected 1, 3, or a multiple of 3 (CT slices, e.g. preprocess.ct_slices=300)"
            )
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.lambda_aux = float(lambda_aux)
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]

        # CT front: slices -> 3 channels, one group of contiguous slices per channel.
        self.front: nn.Module = conv(in_channels, 3, kernel_size=1, groups=3) if in_channels > 3 else nn.Identity()
        stem_in = 3 if in_channels > 3 else in_channels
        self.stem = nn.Sequential(conv(stem_in, stem_width, kernel_size=3, stride=1, padding=1, bias=False), norm(stem_width), nn.ReLU(inplace=True))
        stage_kw = dict(spatial_dims=spatial_dims, stride_a=stride_a, stride_b=stride_b, padding=padding)
        stages1, gates = [], []
        c = stem_width
        for _ in range(Q):
            stage = ResidualStage(c, [int(w) for w in widths_stage1], width_stage1_b, L, bottleneck=bottleneck, bottleneck_ratio=bottleneck_ratio, **stage_kw)
            stages1.append(stage)
            c = stage.out_channels
            gates.append(ControlGateBlock(c, num_classes, spatial_dims=spatial_dims, ths_sens=ths_sens, ths_count=ths_count))
        self.stages1 = nn.ModuleList(stages1)
        self.gates = nn.ModuleList(gates)
        self.stage2 = ResidualStage(c, [int(w) for w in widths_stage2], width_stage2_b, 1, bottleneck=bottleneck, bottleneck_ratio=bottleneck_ratio, **stage_kw)
        self.head = nn.Sequential(Pool[Pool.ADAPTIVEAVG, spatial_dims](1), nn.Flatten(1), nn.Linear(self.stage2.out_channels, num_classes))

        # Sizes at the configured input: refuse what cannot work, remember the feature shapes.
        s = tuple(conv_output_size(n, 3, 1, 1) for n in size)
        shapes: dict[str, tuple[int, ...]] = {"stem": (stem_width, *s)}
        for q, stage in enumerate(self.stages1):
            s = check_stage_sizes(owner, f"stage I{'' if Q == 1 else f' (repetition {q + 1})'}", stage, s, ("stride_a", "stride_b"), size)
            shapes["stage1" if Q == 1 else f"stage1_{q + 1}"] = (stage.out_channels, *s)
        s = check_stage_sizes(owner, "stage II", self.stage2, s, ("stride_a", "stride_b"), size)
        shapes["stage2"] = (self.stage2.out_channels, *s)
        self.feature_shapes = shapes
        self.card = ModelCard(
            arch="cnncf",
            task="classification",
            class_labels=default_labels(num_classes),
            input_spec=InputSpec(in_channels, size, (0.0, 1.0), "ct_stack" if in_channels > 3 else "image2d"),
        )

    @classmethod
    def from_config(cls, cfg: CNNCFConfig, *, num_classes: int, in_channels: int, input_size: int | Sequence[int], spatial_dims: int = 2) -> "CNNCF":
        """Build from the typed config section (``models.cnncf`` or :func:`teacher_config`)."""
        return cls(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            Q=cfg.Q,
            L=cfg.L,
            M=cfg.M,
            N=cfg.N,
            stem_width=cfg.stem_width,
            widths_stage1=cfg.widths_stage1,
            width_stage1_b=cfg.width_stage1_b,
            widths_stage2=cfg.widths_stage2,
            width_stage2_b=cfg.width_stage2_b,
            stride_a=cfg.stride_a,
            stride_b=cfg.stride_b,
            padding=cfg.padding,
            bottleneck=cfg.bottleneck,
            bottleneck_ratio=cfg.bottleneck_ratio,
            ths_sens=cfg.ths_sens,
            ths_count=cfg.ths_count,
            lambda_aux=cfg.lambda_aux,
            spatial_dims=spatial_dims,
        )

    # ------------------------------------------------------------------------------------ gate
    @property
    def gate(self) -> ControlGateBlock:
        """The Control Gate Block in front of stage II (the only one when Q = 1)."""
        return self.gates[-1]  # type: ignore[return-value]

    @property
    def gate_open(self) -> bool:
        """Whether every gate has opened (stage II trains)."""
        return all(g.is_open for g in self.gates)

    def active_gate_index(self) -> int:
        """Index of the first closed gate (the stage being trained), or the last gate when all are open."""
        for i, g in enumerate(self.gates):
            if not g.is_open:
                return i
        return len(self.gates) - 1

    def update_gate(self, sensitivity: float) -> bool:
        """Feed the active auxiliary head's validation sensitivity to its gate; return :attr:`gate_open`."""
        self.gates[self.active_gate_index()].update(sensitivity)
        return self.gate_open

    def open_gates(self) -> None:
        """Open every gate (fine-tuning the whole network, Grad-CAM in training mode, tests)."""
        for g in self.gates:
            g.open()

    # --------------------------------------------------------------------------------- forward
    def _gated(self, stage: nn.Module, gate: ControlGateBlock, x: Tensor) -> Tensor:
        if self.training and not gate.is_open:
            # Closed gate: the stage contributes exactly zero; skip its compute (and its BN statistics).
            size = stage.output_size(tuple(x.shape[2:]))
            return x.new_zeros((x.shape[0], stage.out_channels, *size))
        return gate.apply_gate(stage(x))

    def forward_features(self, x: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """All intermediate outputs: ``stem``, ``stage1`` (list, one per repetition), ``aux`` (list of
        auxiliary logits), ``stage2`` (gated), ``logits``."""
        x = self.stem(self.front(x))
        feats: dict[str, Tensor | list[Tensor]] = {"stem": x}
        stage1_out: list[Tensor] = []
        aux: list[Tensor] = []
        for q, stage in enumerate(self.stages1):
            x = stage(x) if q == 0 else self._gated(stage, self.gates[q - 1], x)
            stage1_out.append(x)
            aux.append(self.gates[q](x))
        x = self._gated(self.stage2, self.gates[-1], x)
        feats.update(stage1=stage1_out, aux=aux, stage2=x, logits=self._head(x))
        return feats

    def _head(self, f2: Tensor) -> Tensor:
        if self.training and not self.gate.is_open:
            # Nothing passes a closed gate: the logits are the head's bias, constant, so neither stage II
            # nor the head learns from the main loss until the gate opens (stage-wise training).
            bias = self.head[-1].bias.detach()
            return bias.unsqueeze(0).expand(f2.shape[0], -1).clone()
        return self.head(f2)

    def stage1(self, x: Tensor) -> Tensor:
        """F' = the last stage I output (what the last gate's auxiliary head and stage II see)."""
        x = self.stem(self.front(x))
        for q, stage in enumerate(self.stages1):
            x = stage(x) if q == 0 else self._gated(stage, self.gates[q - 1], x)
        return x

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(logits, aux_logits): ``aux_logits`` holds every gate's auxiliary head, in gate order (Q entries).

        The training loop (:mod:`covidscan.training.gates`) puts the active gate's head
        (:meth:`active_gate_index`) in the loss, CE(logits) + lambda_aux * CE(aux_logits[active]), and feeds
        gate i the validation sensitivity of head i only. While the gate is closed (training mode) the
        logits are constant (no gradient), so the loss needs lambda_aux > 0 to train anything.
        """
        feats = self.forward_features(x)
        return feats["logits"], list(feats["aux"])  # type: ignore[arg-type,return-value]

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (batch, num_classes)."""
        return self._head(self._gated(self.stage2, self.gates[-1], self.stage1(x)))
