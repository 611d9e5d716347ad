"""torch.distributed for evaluation under torchrun: batch-strided sharding and an exact, order-restoring gather.

Each rank takes whole batches (batch b goes to rank b % world), so every batch holds the same images as in a
single-process run; gathered rows are put back in dataset order, so metrics equal the single-process ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


# On GPUs, CUDA tensors go through NCCL and CPU tensors (gathered features, counts, objects) through gloo: a
# NCCL-only group refuses CPU tensors.
BACKENDS = {"cuda": "cpu:gloo,cuda:nccl", "cpu": "gloo"}


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=BACKENDS[device_type])
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast(info: DistInfo, value):
    """Rank 0's `value` on every rank (a picklable object)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class StridedBatchSampler(Sampler[List[int]]):
    """Consecutive batches of `batch_size` indices; this rank yields batches rank, rank + world, ..."""

    def __init__(self, length: int, batch_size: int, info: DistInfo):
        self.length, self.batch_size, self.info = length, batch_size, info

    def _batches(self) -> List[List[int]]:
        starts = range(0, self.length, self.batch_size)
        return [list(range(s, min(s + self.batch_size, self.length))) for s in starts]

    def __iter__(self) -> Iterator[List[int]]:
        yield from self._batches()[self.info.rank::self.info.world_size]

    def __len__(self) -> int:
        return len(self._batches()[self.info.rank::self.info.world_size])


def gather_rows(info: DistInfo, indices: torch.Tensor, *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """All ranks' rows (matched by dataset index) in ascending index order, on every rank (a rank may have none)."""
    if info.enabled:
        count = torch.tensor([len(indices)], dtype=torch.long)
        counts = [torch.zeros_like(count) for _ in range(info.world_size)]
        dist.all_gather(counts, count)
        width = int(max(c.item() for c in counts))

        def all_rows(t: torch.Tensor) -> torch.Tensor:
            shape = torch.tensor(t.shape[1:], dtype=torch.long)  # a rank without rows has (0, 0): take the others'
            shapes = [torch.zeros_like(shape) for _ in range(info.world_size)]
            dist.all_gather(shapes, shape)
            padded = torch.zeros((width,) + tuple(int(s) for s in torch.stack(shapes).amax(0)), dtype=t.dtype)
            if len(t):
                padded[: len(t)] = t
            parts = [torch.zeros_like(padded) for _ in range(info.world_size)]
            dist.all_gather(parts, padded)
            return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts)])

        indices = all_rows(indices)
        tensors = tuple(all_rows(t) for t in tensors)
    order = torch.argsort(indices)
    return (indices[order],) + tuple(t[order] for t in tensors)
