"""Processes and devices: joining a ``torchrun`` process group, and which device a rank uses.

Under ``torchrun`` every rank trains on its shard and scores a strided shard of each split; the
predictions are gathered so model selection sees the whole split on every rank. Only rank 0
writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deepmsi.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    use_cuda = _want_cuda(device)
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, True)


def pick_device(device: str, info: DistInfo) -> torch.device:
    """``device`` ("auto", "cpu", "cuda", "cuda:N") resolved for this rank."""
    if _want_cuda(device):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for but CUDA is not available")
        if device == "auto" or info.active:
            return torch.device("cuda", info.local_rank)
        return torch.device(device)
    return torch.device("cpu")


def _want_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
