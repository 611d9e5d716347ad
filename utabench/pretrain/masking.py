"""Patch masks for pretraining: BEiT block-wise, UTA's reversed block-wise (Block-R) and random, at an exact ratio;
and the random token mask of text UTA (`random_token_keep`).

A mask is a boolean vector over the patch grid (row-major), True where the patch is masked. Every mask of a
generator masks exactly `round(ratio * H * W)` patches, so a batch of kept-token sequences has one length.

Block-wise (BEiT): rectangles of at least `min_block` patches, aspect ratio log-uniform in [min_aspect, 1/min_aspect],
up to 10 placement attempts per rectangle, until the target is met; a shortfall (the generator gave up) is topped up
with random patches. Block-R: with probability `reverse_prob` the block mask is generated at ratio 1 - r and inverted,
so the masked count stays r * N (decision: the paper inverts "the mask"; generating the complement's ratio keeps
every sample's kept-token count equal, which token dropping needs). At r = 0.5 this makes every location masked
with probability exactly 0.5 in expectation, removing the centre bias of block masking (paper Fig. 3).

Text (paper section 4, "random masking"): a caption's real tokens are SOT, its words and EOT; padding after EOT is
never a token of the text, so it is neither kept nor masked. Decision: SOT and EOT are always kept, as the image
student always keeps CLS: EOT is the token open_clip's text towers pool (the `argmax` of the ids), the one zero-shot
uses, so the student learns it in every step; SOT is the first token of every text, which each later token attends
to under the causal mask. Of the words, `round(ratio * words)` are masked, uniformly at random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image

from utabench.core.errors import UtabenchError
from utabench.core.registry import Registry

MASKS: Registry = Registry("mask type", "mask types")


@dataclass(frozen=True)
class MaskSpec:
    type: str = "block-r"
    ratio: float = 0.5
    min_block: int = 16
    min_aspect: float = 0.3
    reverse_prob: float = 0.5

    def __post_init__(self):
        MASKS.get(self.type)  # an unknown type is refused, listing the known ones
        if not 0.0 < float(self.ratio) < 1.0:
            raise UtabenchError(f"mask ratio must be in (0, 1), got {self.ratio}; e.g. 0.4 (B) or 0.5 (L)")
        if self.min_block < 1 or not 0.0 < self.min_aspect <= 1.0:
            raise UtabenchError(f"mask min_block must be >= 1 and min_aspect in (0, 1], got {self.min_block}, "
                                f"{self.min_aspect}")


class MaskGenerator:
    """Draws masks for a (height, width) patch grid from a numpy Generator (the caller owns the seed)."""

    def __init__(self, grid: Tuple[int, int], spec: MaskSpec):
        self.height, self.width = grid
        self.spec = spec
        self.num_patches = self.height * self.width
        self.num_masked = int(round(spec.ratio * self.num_patches))
        if not 0 < self.num_masked < self.num_patches:
            raise UtabenchError(f"mask ratio {spec.ratio} on a {self.height}x{self.width} grid masks "
                                f"{self.num_masked} of {self.num_patches} patches; pick a ratio that keeps and masks some")
        self.log_aspect = (math.log(spec.min_aspect), math.log(1.0 / spec.min_aspect))

    @property
    def num_kept(self) -> int:
        return self.num_patches - self.num_masked

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        return MASKS.get(self.spec.type)(self, rng)

    def _blocks(self, rng: np.random.Generator, target: int) -> np.ndarray:
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < target:
            added = self._one_block(rng, mask, target - count)
            if added == 0:
                break
            count += added
        if count < target:  # top up so that every mask has the exact count
            free = np.flatnonzero(~mask.reshape(-1))
            mask.reshape(-1)[rng.choice(free, target - count, replace=False)] = True
        return mask

    def _one_block(self, rng: np.random.Generator, mask: np.ndarray, budget: int) -> int:
        low = min(self.spec.min_block, budget)
        for _ in range(10):
            area = rng.uniform(low, budget)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if 0 < h < self.height and 0 < w < self.width:
                top = int(rng.integers(0, self.height - h + 1))
                left = int(rng.integers(0, self.width - w + 1))
                window = mask[top:top + h, left:left + w]
                new = h * w - int(window.sum())
                if 0 < new <= budget:
                    window[...] = True
                    return new
        return 0


def location_probability(generator: MaskGenerator, samples: int, seed: int = 0) -> np.ndarray:
    """How often each grid location is masked over `samples` masks: an (H, W) array (paper Fig. 3)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(generator.num_patches, dtype=np.int64)
    for _ in range(samples):
        total += generator(rng)
    return (total / samples).reshape(generator.height, generator.width)


def write_probability_png(prob: np.ndarray, path: Path, cell: int = 24) -> None:
    """A heat map of `prob` (dark blue = rarely masked, yellow = often), each location a `cell`-pixel square,
    scaled between the map's own min and max."""

    low, high = float(prob.min()), float(prob.max())
    t = (prob - low) / (high - low) if high > low else np.zeros_like(prob)
    stops = np.array([[48, 18, 90], [33, 110, 140], [60, 180, 110], [250, 230, 40]], dtype=np.float64)
    pos = t * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    frac = (pos - i)[..., None]
    rgb = stops[i] * (1 - frac) + stops[i + 1] * frac
    image = Image.fromarray(rgb.astype(np.uint8)).resize((prob.shape[1] * cell, prob.shape[0] * cell), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@MASKS.register("random", help="uniformly random patches")
def random_mask(generator: MaskGenerator, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(generator.num_patches, dtype=bool)
    mask[rng.choice(generator.num_patches, generator.num_masked, replace=False)] = True
    return mask


@MASKS.register("block", help="BEiT's block-wise masking (favours the centre)")
def block_mask(generator: MaskGenerator, rng: np.random.Generator) -> np.ndarray:
    return generator._blocks(rng, generator.num_masked).reshape(-1)


@MASKS.register("block-r", help="UTA's reversed block-wise masking (spatially uniform)")
def reversed_block_mask(generator: MaskGenerator, rng: np.random.Generator) -> np.ndarray:
    reverse = rng.random() < generator.spec.reverse_prob
    target = generator.num_patches - generator.num_masked if reverse else generator.num_masked
    mask = generator._blocks(rng, target).reshape(-1)
    return ~mask if reverse else mask


def random_token_keep(length: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Which of a text's `length` real tokens (SOT, the words, EOT; no padding) the student sees: (length,) bool,
    True = kept. SOT and EOT always; `round(ratio * words)` of the words masked at random."""
    if length < 2:
        raise UtabenchError(f"a tokenised text has at least SOT and EOT, got {length} real tokens")
    keep = np.ones(length, dtype=bool)
    words = length - 2
    keep[1 + rng.choice(words, int(round(ratio * words)), replace=False)] = False
    return keep
