"""The order in which the shared trainer reads its data: the batch at step s is slice s of a per-epoch permutation
drawn from (seed, epoch), and each rank takes every world-th sample of it. The order is a function of the step only,
so a run resumed at step s reads exactly what it would have read, on any number of loader workers; items are
(index, epoch) pairs, so a dataset can draw each sample's augmentation from (seed, epoch, index)."""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
from torch.utils.data import Sampler

from utabench.core.errors import UtabenchError


class StepSampler(Sampler):
    """Yields (index, epoch) for this rank's share of global batches `start_step` .. `total_steps - 1`."""

    def __init__(self, num_samples: int, global_batch: int, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise UtabenchError(f"batch size {global_batch} does not split over {world_size} processes")
        self.steps_per_epoch = num_samples // global_batch
        if self.steps_per_epoch < 1:
            raise UtabenchError(f"the data has {num_samples} images, fewer than one batch of {global_batch}; "
                                "lower batch_size or add images")
        self.num_samples, self.global_batch, self.seed = num_samples, global_batch, seed
        self.start_step, self.total_steps, self.rank, self.world_size = start_step, total_steps, rank, world_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * (self.global_batch // self.world_size)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch, order = -1, None
        for step in range(self.start_step, self.total_steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                order = np.random.default_rng([self.seed, 1_000_003, epoch]).permutation(self.num_samples)
            first = (step % self.steps_per_epoch) * self.global_batch
            for index in order[first + self.rank: first + self.global_batch: self.world_size]:
                yield int(index), epoch
