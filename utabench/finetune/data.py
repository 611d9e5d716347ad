"""Training images for fine-tuning whose augmentation is a function of (seed, epoch, index): timm's transforms draw
from Python's, numpy's and torch's global generators, so each sample seeds them from its own key and puts them back
after. Resuming at a step then reproduces the data exactly, with any number of loader workers."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from utabench.datasets.images import ImageList


@contextlib.contextmanager
def seeded(*key: int) -> Iterator[None]:
    """Python's, numpy's and torch's global generators seeded from `key` inside the block, restored after."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class TrainImages(Dataset):
    """Items are (index, epoch) pairs (the trainer's StepSampler); returns {"image", "label"}."""

    def __init__(self, samples: List[Tuple[Path, int]], transform: Callable, seed: int):
        self.images, self.seed = ImageList(samples, transform), int(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        index, epoch = item
        with seeded(self.seed, epoch, index):
            image, label, _ = self.images[index]
        return {"image": image, "label": torch.tensor(label)}
