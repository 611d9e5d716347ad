"""Text UTA's inputs: the captions of an image-text source (webdataset jpg + txt), tokenised, each with its random
token mask; the images are never read.

As for images (`data.py`), everything a sample draws is a function of (seed, epoch, index) alone: which of its
caption lines it uses (several lines are several captions of one image) and which of its words are masked
(`masking.random_token_keep`), so a resumed run sees the same data.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from utabench.pretrain.data import Record, index_source
from utabench.pretrain.masking import random_token_keep


class PretrainCaptions(Dataset):
    """Items are (index, epoch) pairs; returns {"tokens": (context,) long ids, "keep": (context,) bool (True on
    the real tokens the student sees, False on masked words and padding), "index", "epoch"}."""

    def __init__(self, records: List[Record], tokenizer: Callable[[Sequence[str]], torch.Tensor], ratio: float,
                 seed: int):
        self.records, self.tokenizer, self.ratio, self.seed = records, tokenizer, float(ratio), int(seed)

    @classmethod
    def from_config(cls, data: Dict, tokenizer: Callable[[Sequence[str]], torch.Tensor], ratio: float,
                    seed: int) -> "PretrainCaptions":
        return cls(index_source(data, need_captions=True), tokenizer, ratio, seed)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: Tuple[int, int]) -> Dict:
        index, epoch = item
        rng = np.random.default_rng([self.seed, epoch, index])
        lines = [line for line in (self.records[index].caption or "").splitlines() if line.strip()] or [""]
        tokens = self.tokenizer([lines[int(rng.integers(len(lines)))]])[0]
        length = int(tokens.argmax()) + 1  # up to EOT, the highest id (open_clip's tokenizers truncate before it)
        keep = torch.zeros(tokens.shape[0], dtype=torch.bool)
        keep[:length] = torch.from_numpy(random_token_keep(length, self.ratio, rng))
        return {"tokens": tokens, "keep": keep, "index": index, "epoch": epoch}
