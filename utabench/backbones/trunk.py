"""The trunk protocol: what a backbone family's ViT image tower gives dense prediction and fine-tuning.

A family brings a `Trunk` (from `Backbone.vision_trunk()`, taken through `open_trunk` in base.py) over a trainable
copy of its tower, with:
- the shape: patch size, width, depth (checked against the backbone's info before any training);
- for dense prediction (dense/vit.py, the ViTDet backbone), `token_map()`: a `TokenMap` module that embeds images
  into a (B, H, W, C) token map without the CLS token (patch position embeddings resized to the input's grid) and
  runs block i's attention on any token layout the caller chooses (the whole map, or windows) and its other parts;
- the layer map fine-tuning's layer-wise lr decay reads, `layer_of(name)`: which tower parameters are the stem
  (layer 0) and which belong to block i (layer i + 1), the rest (final norm, head, projection) coming after the last
  block (dense prediction numbers the token map's own blocks);
- for fine-tuning (finetune/model.py): the last block's patch tokens before the final norm, stochastic depth, the
  unused parts to drop (final norm, pooling, projection) and the parameters without weight decay.
The timm `Eva` trunk is in `trunk_eva.py`, open_clip's `VisionTransformer` trunk in `trunk_clip.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Optional, Set, Tuple

import torch
from torch import nn

from utabench.backbones.patch_geometry import resize_grid
from utabench.core.errors import UtabenchError


class TokenMap(nn.Module):
    """A tower as dense prediction runs it: the patch convolution, the patch position embeddings on the pretraining
    grid (1, h, w, C) without the CLS row, the blocks, and the family's own pre-norm, attention and block parts."""

    def __init__(self, proj: nn.Conv2d, pos: torch.Tensor, blocks: nn.ModuleList):
        super().__init__()
        self.proj = proj
        self.pos_embed = nn.Parameter(pos.detach().clone())  # (1, h, w, C), CLS row removed
        self.blocks = blocks

    @property
    def patch_size(self) -> int:
        return int(self.proj.kernel_size[0])

    @property
    def width(self) -> int:
        return int(self.proj.out_channels)

    def pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        """What the tower applies to the embedded tokens before the first block (none by default)."""
        return x

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H*p, W*p) -> tokens (B, H, W, C), position embeddings resized to the H x W grid."""
        x = self.proj(images).permute(0, 2, 3, 1)
        return self.pre_norm(x + resize_grid(self.pos_embed, tuple(x.shape[1:3])))

    def attention(self, i: int, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """Block i's attention on normed tokens (B', h*w, C) laid out as an h x w grid."""
        raise NotImplementedError

    def parts(self, i: int) -> Tuple[nn.Module, Callable, nn.Module, nn.Module, Callable]:
        """(norm1, scale1, norm2, mlp, scale2) of block i: x += scale1(attn(norm1(x))); x += scale2(mlp(norm2(x)))."""
        raise NotImplementedError


class Trunk(ABC):
    """A trainable copy of a backbone's ViT image tower (`self.tower`, trained in place by fine-tuning) and what
    dense prediction and fine-tuning need of it."""

    def __init__(self, tower: nn.Module):
        self.tower = tower

    @property
    @abstractmethod
    def patch_size(self) -> int: ...

    @property
    @abstractmethod
    def width(self) -> int:
        """The token width."""

    @property
    @abstractmethod
    def depth(self) -> int:
        """The number of blocks."""

    @abstractmethod
    def token_map(self) -> TokenMap:
        """The tower as a (B, H, W, C) token map for dense prediction (it may share, and change, the tower's
        modules: a trunk gives either a token map or a fine-tuned tower)."""

    @abstractmethod
    def layer_of(self, name: str) -> Optional[int]:
        """The layer of the tower's parameter `name`: 0 for the stem (patch and position embeddings, class token,
        pre-norm), i + 1 for block i's, None for what comes after the last block."""

    @abstractmethod
    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The last block's patch tokens (B, N, C), before the tower's final norm, without prefix tokens."""

    @abstractmethod
    def drop_unused(self) -> None:
        """Replace what fine-tuning does not use (final norm, pooling, head, projection) by nothing: DDP refuses
        parameters without gradients."""

    @abstractmethod
    def no_weight_decay(self) -> Set[str]:
        """Tower parameters fine-tuning does not decay beyond the one-dimensional ones (position embeddings, class
        token)."""

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth for fine-tuning, rising linearly over the blocks from 0 to `rate` (> 0)."""
        raise UtabenchError(f"drop path: the {type(self.tower).__name__} tower's blocks have none; set drop_path: 0")
