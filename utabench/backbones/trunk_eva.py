"""The trunk of timm's `Eva` towers (UTA, the EVA-02 MIM encoders, the timm tower of EVA-02-CLIP).

Dense prediction: patch norm and `norm_pre` after the position embeddings, q/k RoPE rebuilt for every token grid
(interpolated from the pretraining grid), no CLS at run time. Fine-tuning: timm's `forward_intermediates`, its
blocks' `drop_path1` / `drop_path2`; the final norm and head are dropped.
"""

from __future__ import annotations

from typing import Dict, Set, Tuple

import torch
from timm.layers import DropPath, RotaryEmbeddingCat
from timm.models.eva import Eva
from torch import nn

from utabench.backbones import layer_map
from utabench.backbones.trunk import TokenMap, Trunk
from utabench.core.errors import NotApplicable, UtabenchError


def _layer_scale(gamma):
    return (lambda y: y) if gamma is None else (lambda y: y * gamma)


class EvaTokenMap(TokenMap):
    def __init__(self, eva: Eva):
        grid = eva.patch_embed.grid_size
        if eva.pos_embed is None:
            pos = torch.zeros(1, *grid, eva.embed_dim)
        else:
            pos = eva.pos_embed[:, eva.num_prefix_tokens:]
        super().__init__(eva.patch_embed.proj, pos.reshape(1, *grid, -1), eva.blocks)
        self.patch_norm, self.norm_pre = eva.patch_embed.norm, eva.norm_pre
        self.rope = eva.rope
        if self.rope is not None and not isinstance(self.rope, RotaryEmbeddingCat):
            raise UtabenchError("dense features support EVA-style RoPE (RotaryEmbeddingCat), not "
                                f"{type(self.rope).__name__}")
        for block in self.blocks:
            block.attn.num_prefix_tokens = 0  # no CLS at run time: RoPE covers every token
        self._rope_cache: Dict[Tuple[int, int], torch.Tensor] = {}

    def pre_norm(self, x):
        return self.norm_pre(self.patch_norm(x))

    def rope_embed(self, grid: Tuple[int, int]) -> torch.Tensor:
        if grid not in self._rope_cache:
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


class EvaTrunk(Trunk):
    def __init__(self, tower: nn.Module):
        if not isinstance(tower, Eva):
            raise NotApplicable(f"its timm tower is a {type(tower).__name__}; utabench opens timm's Eva towers")
        super().__init__(tower)

    @property
    def patch_size(self) -> int:
        return int(self.tower.patch_embed.patch_size[0])

    @property
    def width(self) -> int:
        return int(self.tower.embed_dim)

    @property
    def depth(self) -> int:
        return len(self.tower.blocks)

    def token_map(self) -> EvaTokenMap:
        return EvaTokenMap(self.tower)

    def layer_of(self, name):
        return layer_map.layer_of(name)

    def patch_tokens(self, images):
        return self.tower.forward_intermediates(images, indices=[self.depth - 1], intermediates_only=True,
                                                output_fmt="NLC")[0]

    def drop_unused(self):
        for name in ("norm", "fc_norm", "head_drop", "head", "attn_pool"):
            if isinstance(getattr(self.tower, name, None), nn.Module):
                setattr(self.tower, name, nn.Identity())

    def no_weight_decay(self) -> Set[str]:
        return {"cls_token", "pos_embed"}

    def set_drop_path(self, rate):
        blocks = self.tower.blocks
        for block, value in zip(blocks, torch.linspace(0, rate, len(blocks)).tolist()):
            block.drop_path1, block.drop_path2 = DropPath(value), DropPath(value)
