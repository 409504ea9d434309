"""Data-parallel training with torch.distributed: the process group, the sharded sampler, the DDP wrapper,
the validation gathered over every rank, and the relaunch of a stage under ``torchrun``.

One rule decides whether a process trains data-parallel: ``WORLD_SIZE`` > 1 in its environment, which is
what ``torchrun`` (``python -m torch.distributed.run``) sets, with ``RANK`` and ``LOCAL_RANK``. Without it
every function here is a no-op and :func:`covidscan.training.loop.train` runs exactly as before.

What the loop does with ``world_size`` ranks (see :func:`covidscan.training.loop.train`):

- the process group: ``gloo`` on the CPU, ``nccl`` on CUDA (``run.distributed.backend``); each rank on
  ``cuda:<LOCAL_RANK>``;
- the training batch ``train.*.batch_size`` is the *global* batch: each rank takes
  ``ceil(batch_size / world_size)`` samples of its shard (:class:`ShardedEpochSampler`, a
  ``DistributedSampler`` over the same seeded (seed, epoch) order as the one-process
  :class:`~covidscan.training.data.EpochSampler`, each sample keeping the augmentation seed of its global
  position), so the learning rate and schedule keep their meaning;
- gradients are averaged over the ranks by ``DistributedDataParallel`` (with ``find_unused_parameters``
  for a gated model: while a Control Gate Block is closed, stage II and the main head get no gradient);
- BatchNorm: SyncBatchNorm on CUDA (``run.distributed.sync_batchnorm``); PyTorch has no SyncBatchNorm on
  the CPU, so there each rank normalises with its own shard's statistics; before every validation rank
  0's buffers (BatchNorm running statistics, the gates' state) are broadcast, so every rank validates and
  saves the same weights;
- validation is sharded over the ranks and the outputs gathered back in dataset order
  (:func:`gather_in_order`): the validation AUROC, sensitivity and the Control Gate Block's auxiliary
  sensitivity are computed over the whole validation set, identically on every rank, so every rank's
  gate opens at the same epoch;
- rank 0 alone writes checkpoints (then a barrier) and calls the epoch callback (MLflow); every rank
  resumes from the newest checkpoint (the folder must be shared by all nodes), and the ranks check that
  they resumed from the same epoch. ``torchrun --max-restarts`` restarts the workers after one dies
  (e.g. SIGKILLed), and the restart resumes;
- :func:`is_main_process` is what :mod:`covidscan.tracking` and the stages ask before logging or writing.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from covidscan.config import DistributedConfig
from covidscan.errors import ConfigError
from covidscan.training.data import sample_seed

log = logging.getLogger(__name__)

TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the ranks (one process: world_size 1, rank 0)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one rank: train data-parallel."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, writes checkpoints and outputs."""
        return self.rank == 0


def env_context() -> DistributedContext:
    """The ranks as ``torchrun`` set them in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    except ValueError as err:
        raise ConfigError(f"torchrun environment: WORLD_SIZE/RANK/LOCAL_RANK must be integers ({err})") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"torchrun environment: RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return DistributedContext(world_size=world, rank=rank, local_rank=local)


def is_main_process() -> bool:
    """Whether this process is rank 0 (True without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return env_context().is_main


def setup(cfg: DistributedConfig, device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Join the process group when started by torchrun with more than one rank; the device of this rank.

    Args:
        cfg: ``run.distributed``.
        device: the device :func:`covidscan.device.resolve_device` picked (CUDA -> ``cuda:<LOCAL_RANK>``).

    Raises:
        ConfigError: ``nccl`` asked for on the CPU.
    """
    ctx = env_context()
    if not ctx.enabled:
        return ctx, device
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("run.distributed.backend is 'nccl' but training runs on the CPU; use 'gloo' or 'auto'")
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=cfg.timeout_s)
        store = restart_store(ctx, timeout)
        if store is None:
            dist.init_process_group(backend, timeout=timeout)
        else:
            dist.init_process_group(backend, store=store, rank=ctx.rank, world_size=ctx.world_size, timeout=timeout)
        atexit.register(_destroy)
        log.info("rank %d/%d joined the process group (%s, %s)", ctx.rank, ctx.world_size, backend, device)
    return ctx, device


def restart_store(ctx: DistributedContext, timeout: timedelta) -> dist.Store | None:
    """The rendezvous store of a torchrun restart, under a prefix of its own (None: the first attempt, or
    not started by torchrun: ``env://`` as usual).

    torchrun's elastic agent keeps one TCPStore across the restarts of a standalone launch, so the gloo
    addresses the ranks of the failed attempt published are still there: a restarted rank would read
    its peer's dead address and fail with "Connection refused". A prefix per restart keeps the attempts
    apart.
    """
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restart == 0 or "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        return None
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # else rank 0 hosts it
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ctx.world_size, is_master=not agent_store and ctx.rank == 0,
                          timeout=timeout, multi_tenant=not agent_store)  # fmt: skip
    return dist.PrefixStore(f"covidscan/restart_{restart}", store)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (no-op with one)."""
    if ctx.enabled:
        dist.barrier()


def per_rank_batch(batch_size: int, ctx: DistributedContext) -> int:
    """Each rank's share of the global batch: ``ceil(batch_size / world_size)``."""
    return max(1, math.ceil(batch_size / ctx.world_size))


class ShardedEpochSampler(DistributedSampler):
    """A ``DistributedSampler`` over :class:`~covidscan.training.data.EpochSampler`'s order.

    The epoch's order is the one-process order (a pure function of seed and epoch), padded by repeating
    its head to a multiple of ``world_size`` (as DistributedSampler does); rank r takes positions
    r, r + world_size, ... and each sample keeps the augmentation seed of its position in that order.
    Its state is ``{seed, epoch}``, as EpochSampler's, so a checkpoint resumes it.
    """

    def __init__(self, dataset: Dataset, seed: int, ctx: DistributedContext, with_seeds: bool = True) -> None:
        super().__init__(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=int(seed), drop_last=False)
        self.n = len(dataset)  # type: ignore[arg-type]
        self.with_seeds = with_seeds

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.n, generator=g).tolist()
        pad = self.total_size - len(order)
        return order + (order * math.ceil(pad / max(1, len(order))))[:pad]

    def __iter__(self) -> Iterator[Any]:
        order = self.order()
        for position in range(self.rank, self.total_size, self.num_replicas):
            index = order[position]
            yield (index, sample_seed(self.seed, self.epoch, position)) if self.with_seeds else index

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class ShardSampler(Sampler):
    """Validation shard of rank r: indices r, r + world_size, ... in dataset order (no padding)."""

    def __init__(self, n: int, ctx: DistributedContext) -> None:
        self.n, self.ctx = n, ctx

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.ctx.rank, self.n, self.ctx.world_size))

    def __len__(self) -> int:
        return len(range(self.ctx.rank, self.n, self.ctx.world_size))


def gather_in_order(local: torch.Tensor, n: int, ctx: DistributedContext) -> torch.Tensor:
    """Reassemble per-rank validation outputs (rank r holds rows r, r + W, ... of :class:`ShardSampler`)
    into the (n, ...) tensor of the whole set, in dataset order, on every rank."""
    if not ctx.enabled:
        return local
    per = math.ceil(n / ctx.world_size)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        rows = len(range(r, n, ctx.world_size))
        out[r::ctx.world_size] = part[:rows].cpu()
    return out


def all_reduce_sum(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """The sum of ``value`` over the ranks (``value`` itself with one rank)."""
    if not ctx.enabled:
        return value
    total = value.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def check_same_on_all_ranks(value: int, what: str, ctx: DistributedContext) -> None:
    """Raise on every rank when the ranks disagree on ``value`` (e.g. the epoch they resumed from)."""
    if not ctx.enabled:
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    mine = torch.tensor([value], dtype=torch.long, device=device)
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if int(lo) != int(hi):
        raise ConfigError(f"the ranks disagree on {what} ({int(lo)} .. {int(hi)}): is the checkpoint folder shared by every node?")


def broadcast_buffers(model: nn.Module, ctx: DistributedContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics, gate state) to every rank."""
    if not ctx.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def use_sync_batchnorm(cfg: DistributedConfig, device: torch.device, ctx: DistributedContext) -> bool:
    """Whether BatchNorm becomes SyncBatchNorm: ``auto`` -> on CUDA with several ranks.

    Raises:
        ConfigError: ``on`` on the CPU (PyTorch's SyncBatchNorm runs on accelerators only).
    """
    if not ctx.enabled or cfg.sync_batchnorm == "off":
        return False
    if device.type == "cpu":
        if cfg.sync_batchnorm == "on":
            raise ConfigError("run.distributed.sync_batchnorm is 'on' but PyTorch has no SyncBatchNorm on the CPU; use 'auto' or 'off'")
        return False
    return True


class SyncBatchNormSwap:
    """BatchNorm -> SyncBatchNorm in place for the duration of a training run, then back (the caller's
    model keeps its own BatchNorm classes; the weights and running statistics carry over both ways)."""

    def __init__(self, model: nn.Module) -> None:
        self.swapped: list[tuple[nn.Module, str, nn.Module]] = []
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
                    sync = nn.SyncBatchNorm.convert_sync_batchnorm(child)
                    setattr(parent, name, sync)
                    self.swapped.append((parent, name, child))

    def restore(self) -> None:
        for parent, name, original in self.swapped:
            original.load_state_dict(getattr(parent, name).state_dict())
            setattr(parent, name, original)
        self.swapped.clear()


class _Forward(nn.Module):
    """``forward(x, with_aux)``: DDP hooks only ``forward``, so the auxiliary forward goes through it too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, with_aux: bool = False) -> Any:
        return self.model.forward_with_aux(x) if with_aux else self.model(x)


def data_parallel(model: nn.Module, device: torch.device, *, find_unused_parameters: bool) -> nn.Module:
    """The model wrapped in DistributedDataParallel; call it as ``ddp(x)`` or ``ddp(x, with_aux=True)``.

    Rank 0's parameters and buffers are broadcast to every rank here (after a resume every rank loaded
    the same checkpoint anyway).
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_Forward(model), device_ids=ids, find_unused_parameters=find_unused_parameters, forward_sync_buffers=True)


def torchrun_command(cfg: DistributedConfig, module: str, argv: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts R -m <module> <argv>``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cfg.nproc_per_node}",
            f"--max-restarts={cfg.max_restarts}", "-m", module, *argv]  # fmt: skip


def relaunch_under_torchrun(cfg: DistributedConfig, module: str, argv: Sequence[str] | None = None) -> int | None:
    """Run this stage again under torchrun when ``run.distributed.nproc_per_node`` > 1 and this process was
    not started by torchrun; returns torchrun's exit code (None: carry on in this process).

    This is how ``dvc repro`` trains data-parallel on one node: dvc.yaml's commands stay
    ``python -m pipelines.<stage>``, and the setting (in the stage's effective params) decides.
    """
    if cfg.nproc_per_node <= 1 or "WORLD_SIZE" in os.environ:
        return None
    cmd = torchrun_command(cfg, module, list(sys.argv[1:] if argv is None else argv))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.nproc_per_node)))
    log.info("run.distributed.nproc_per_node=%d: %s", cfg.nproc_per_node, " ".join(cmd))
    return subprocess.run(cmd, env=env, check=False).returncode
