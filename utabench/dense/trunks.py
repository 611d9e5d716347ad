"""The image towers of registered backbones, opened up for dense prediction.

A trunk turns images into a (B, H, W, C) token map without the CLS token (its position embedding is dropped and the
patch position embeddings are resized to the input's grid), and runs block i's attention on any token layout the
caller chooses (whole map, or windows) with the RoPE of that layout. Two tower types are supported: timm's `Eva`
(UTA, EVA-02 MIM encoders, the timm tower of EVA-02-CLIP) and open_clip's native `VisionTransformer` (CLIP).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import nn

from utabench.backbones.patch_geometry import resize_grid
from utabench.core.errors import UtabenchError


class Trunk(nn.Module):
    """Shared parts: the patch convolution, the patch position embeddings on the pretraining grid, the blocks."""

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
        return x

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = self.proj(images).permute(0, 2, 3, 1)
        return self.pre_norm(x + resize_grid(self.pos_embed, tuple(x.shape[1:3])))

    def attention(self, i: int, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """Block i's attention on normed tokens (B', h*w, C) laid out as an h x w grid."""
        raise NotImplementedError

    def parts(self, i: int) -> Tuple[nn.Module, Callable, nn.Module, nn.Module, Callable]:
        """(norm1, scale1, norm2, mlp, scale2) of block i: x += scale1(attn(norm1(x))); x += scale2(mlp(norm2(x)))."""
        raise NotImplementedError


def _layer_scale(gamma):
    return (lambda y: y) if gamma is None else (lambda y: y * gamma)


class EvaTrunk(Trunk):
    """timm's Eva: patch norm, norm_pre, q/k RoPE rebuilt for every grid (interpolated from the pretraining grid)."""

    def __init__(self, eva):
        grid = eva.patch_embed.grid_size
        pos = eva.pos_embed[:, eva.num_prefix_tokens:] if eva.pos_embed is not None else torch.zeros(1, *grid, eva.embed_dim)
        super().__init__(eva.patch_embed.proj, pos.reshape(1, *grid, -1), eva.blocks)
        self.patch_norm, self.norm_pre = eva.patch_embed.norm, eva.norm_pre
        self.rope = eva.rope
        if self.rope is not None and type(self.rope).__name__ != "RotaryEmbeddingCat":
            raise UtabenchError(f"dense features support EVA-style RoPE (RotaryEmbeddingCat), not {type(self.rope).__name__}")
        for block in self.blocks:
            block.attn.num_prefix_tokens = 0  # no CLS at run time: RoPE covers every token
        self._rope_cache: Dict[Tuple[int, int], torch.Tensor] = {}

    def pre_norm(self, x):
        return self.norm_pre(self.patch_norm(x))

    def rope_embed(self, grid: Tuple[int, int]) -> torch.Tensor:
        if grid not in self._rope_cache:
            from timm.layers import RotaryEmbeddingCat

            r = self.rope
            rope = RotaryEmbeddingCat(
                r.dim, max_res=r.max_res, temperature=r.temperature, in_pixels=r.in_pixels,
                linear_bands=r.linear_bands, feat_shape=list(grid), ref_feat_shape=r.ref_feat_shape,
                grid_offset=r.grid_offset, grid_indexing=r.grid_indexing, rotate_half=r.rotate_half,
            )
            self._rope_cache[grid] = rope.get_embed()
        return self._rope_cache[grid]

    def attention(self, i, x, grid):
        rope = self.rope_embed(tuple(grid)).to(x.device) if self.rope is not None else None
        return self.blocks[i].attn(x, rope=rope)

    def parts(self, i):
        b = self.blocks[i]
        return b.norm1, _layer_scale(b.gamma_1), b.norm2, b.mlp, _layer_scale(b.gamma_2)


class ClipTrunk(Trunk):
    """open_clip's VisionTransformer: ln_pre after the position embeddings, nn.MultiheadAttention blocks."""

    def __init__(self, visual):
        grid = visual.grid_size
        pos = visual.positional_embedding[1:].reshape(1, *grid, -1)
        super().__init__(visual.conv1, pos, visual.transformer.resblocks)
        self.ln_pre = visual.ln_pre
        for block in self.blocks:
            if not block.attn.batch_first or hasattr(block, "ln_1_kv"):
                raise UtabenchError("dense features need open_clip's standard batch-first residual attention blocks")

    def pre_norm(self, x):
        return self.ln_pre(x)

    def attention(self, i, x, grid):
        return self.blocks[i].attn(x, x, x, need_weights=False)[0]

    def parts(self, i):
        b = self.blocks[i]
        return b.ln_1, b.ls_1, b.ln_2, b.mlp, b.ls_2


def make_trunk(tower: nn.Module) -> Trunk:
    from open_clip.transformer import VisionTransformer
    from timm.models.eva import Eva

    if isinstance(tower, Eva):
        return EvaTrunk(tower)
    if isinstance(tower, VisionTransformer):
        return ClipTrunk(tower)
    raise UtabenchError(f"dense features support timm Eva and open_clip ViT towers, not {type(tower).__name__}")
