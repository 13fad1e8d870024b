"""DDP plumbing for ``torchrun --nproc_per_node=N -m cnnzoo train ...``: gloo on CPU, nccl on GPU.

The training loop shards each global batch by rank itself (every rank draws the same epoch plan and takes
its contiguous slice of each global batch), which is what ``DistributedSampler`` does but keeps one
global batch identical to a single-process batch: a 2-process run with global batch B follows the same
trajectory as one process with batch B (exactly without BatchNorm, closely with ``--sync-bn``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn

from ..errors import CnnzooError


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def close(self) -> None:
        if self.owns_group and tdist.is_initialized():
            # leave together: rank 0 still writes the curves and result.json when the others are done, and a
            # rank that tears down gloo while a peer is still connected can abort the peer at exit
            # ("terminate called without an active exception", seen under load in the DDP test)
            try:
                tdist.barrier()
            finally:
                tdist.destroy_process_group()
                self.owns_group = False


def resolve_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``None`` -> the best available (CUDA, then Apple MPS, then CPU); ``"cuda"`` -> this rank's GPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    here = usable_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CnnzooError(f"unknown device {device!r}: use {', '.join(here)}") from e
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    ok = dev.type == "cpu" or (str(dev) in here if dev.type == "cuda" else dev.type in here)
    if not ok:  # mps, or cuda:3, on a machine without them
        raise CnnzooError(f"device {device!r} does not work here: use {', '.join(here)}")
    return dev


def usable_devices() -> list[str]:
    """The devices that work on this machine: cpu, then cuda and cuda:N per GPU, then mps where available
    (the only ones --device accepts, checked before any run folder is made)."""
    here = ["cpu"]
    if torch.cuda.is_available():
        here += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        here.append("mps")
    return here


def setup_distributed(device: str | torch.device | None = None) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment (or run as a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(0, 1, 0, dev)
    owns = False
    if not tdist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    if dev.type == "cpu":
        # torchrun sets OMP_NUM_THREADS=1; otherwise split the cores between the local processes
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return DistContext(tdist.get_rank(), tdist.get_world_size(), local_rank, dev, owns)


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum or max) when running under DDP; a no-op otherwise."""
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX if op == "max" else tdist.ReduceOp.SUM)
    return t


def broadcast_flag(flag: bool, dist: DistContext) -> bool:
    """Rank 0's decision (e.g. "the time budget is spent"), so every rank stops after the same epoch."""
    if dist.world <= 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=dist.device)
    tdist.broadcast(t, src=0)
    return bool(t.item())


def wrap_ddp(net: nn.Module, sync_bn: bool, dist: DistContext) -> tuple[nn.Module, nn.Module]:
    """(net, what the step calls): under DDP the DistributedDataParallel wrapper (SyncBatchNorm if asked)."""
    if dist.world == 1:
        return net, net
    cuda = dist.device.type == "cuda"
    if sync_bn:
        if not cuda:  # torch's SyncBatchNorm only runs on GPUs
            raise CnnzooError("--sync-bn needs CUDA devices (torch's SyncBatchNorm is GPU-only): drop it on CPU")
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net, nn.parallel.DistributedDataParallel(net, device_ids=[dist.device.index] if cuda else None)
