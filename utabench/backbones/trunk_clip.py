"""The trunk of open_clip's native `VisionTransformer` (CLIP, OpenCLIP, DataComp).

Dense prediction: `ln_pre` after the position embeddings, the blocks' batch-first `nn.MultiheadAttention`, no CLS at
run time. Fine-tuning: open_clip's `forward_intermediates`; `ln_post`, the attention pool and the projection are
dropped. Its blocks have no stochastic depth.
"""

from __future__ import annotations

from typing import Set

from torch import nn

from utabench.backbones import layer_map
from utabench.backbones.trunk import TokenMap, Trunk
from utabench.core.errors import UtabenchError


class ClipTokenMap(TokenMap):
    def __init__(self, visual: nn.Module):
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


class ClipTrunk(Trunk):
    @property
    def patch_size(self) -> int:
        return int(self.tower.conv1.kernel_size[0])

    @property
    def width(self) -> int:
        return int(self.tower.transformer.width)

    @property
    def depth(self) -> int:
        return len(self.tower.transformer.resblocks)

    def token_map(self) -> ClipTokenMap:
        return ClipTokenMap(self.tower)

    def layer_of(self, name):
        return layer_map.layer_of(name)

    def patch_tokens(self, images):
        return self.tower.forward_intermediates(images, indices=[self.depth - 1], intermediates_only=True,
                                                output_fmt="NLC")["image_intermediates"][0]

    def drop_unused(self):
        for name in ("ln_post", "attn_pool"):
            if isinstance(getattr(self.tower, name, None), nn.Module):
                setattr(self.tower, name, nn.Identity())
        if isinstance(getattr(self.tower, "proj", None), nn.Parameter):
            self.tower.proj = None

    def no_weight_decay(self) -> Set[str]:
        return {"class_embedding", "positional_embedding"}
