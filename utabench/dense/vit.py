"""`UtabenchViT`: any registered backbone's ViT tower as an mmdet / mmseg backbone, in the ViTDet style.

The backbone's trunk (backbones/trunk.py) gives the token map: the embedding and each block's attention and parts.

No CLS token at run time; position embeddings and RoPE follow the input size; window attention (zero-padded to whole
windows, RoPE built for the window grid) in every block except the global ones; outputs of chosen blocks as
(B, C, H, W) maps; stochastic depth per image with rates rising linearly to `drop_path_rate`; optional activation
checkpointing; optional patch-size conversion of the weights (EVA-02's patch 14 -> 16 for detection). Configs name
it like any backbone: `backbone=dict(type='UtabenchViT', backbone=dict(spec='uta:B-16', checkpoint=...), ...)`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

import utabench.backbones  # noqa: F401  (registers the families, in mmengine's worker processes too)
from utabench.backbones.base import open_trunk
from utabench.backbones.factory import build_backbone
from utabench.dense.handoff import take
from utabench.dense.patch_size import convert_trunk_patch_size


def window_partition(x: torch.Tensor, size: int):
    """(B, H, W, C) -> (B * windows, size * size, C), zero-padding H and W up to multiples of `size`."""
    B, H, W, C = x.shape
    ph, pw = (size - H % size) % size, (size - W % size) % size
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    Hp, Wp = H + ph, W + pw
    x = x.view(B, Hp // size, size, Wp // size, size, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, C), (Hp, Wp)


def window_unpartition(x: torch.Tensor, size: int, padded, shape) -> torch.Tensor:
    (Hp, Wp), (H, W) = padded, shape
    B = x.shape[0] // ((Hp // size) * (Wp // size))
    x = x.view(B, Hp // size, Wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W].contiguous()


class UtabenchViT(BaseModule):
    def __init__(self, backbone: Union[str, Dict[str, Any]], out_indices: Sequence[int] = (-1,),
                 window_size: int = 0, global_blocks: Sequence[int] = (), drop_path_rate: float = 0.0,
                 with_cp: bool = False, patch_size: Optional[int] = None, init_cfg=None):
        super().__init__(init_cfg)
        entry = dict(backbone) if isinstance(backbone, dict) else {"spec": backbone}
        built = take(entry.pop("lent", None)) or build_backbone(entry)
        # a copy of the tower is fine-tuned here; the built backbone stays as it is (registry backbones are frozen)
        self.trunk = open_trunk(built, "give dense features").token_map().requires_grad_(True)
        if patch_size and patch_size != self.trunk.patch_size:
            convert_trunk_patch_size(self.trunk, int(patch_size))
        self.num_layers = len(self.trunk.blocks)
        self.out_indices = [i % self.num_layers for i in out_indices]
        self.window_size = int(window_size)
        self.global_blocks = {g % self.num_layers for g in global_blocks}
        rates = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.drop_paths = nn.ModuleList(DropPath(r) if r > 0 else nn.Identity() for r in rates)
        self.with_cp = with_cp

    @property
    def patch_size(self) -> int:
        return self.trunk.patch_size

    @property
    def embed_dim(self) -> int:
        return self.trunk.width

    def init_weights(self):
        """Nothing to do: the weights are the backbone's checkpoint (or its seeded random initialisation)."""

    def layer_id(self, name: str) -> int:
        """Layer-decay depth of a parameter named relative to this module: embeddings 0, block i -> i + 1."""
        parts = name.split(".")
        if parts[:2] == ["trunk", "blocks"]:
            return int(parts[2]) + 1
        return 0 if parts[0] == "trunk" else self.num_layers + 1

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        norm1, scale1, norm2, mlp, scale2 = self.trunk.parts(i)
        B, H, W, C = x.shape
        y = norm1(x)
        if self.window_size and i not in self.global_blocks:
            windows, padded = window_partition(y, self.window_size)
            y = self.trunk.attention(i, windows, (self.window_size, self.window_size))
            y = window_unpartition(y, self.window_size, padded, (H, W))
        else:
            y = self.trunk.attention(i, y.reshape(B, H * W, C), (H, W)).reshape(B, H, W, C)
        x = x + self.drop_paths[i](scale1(y))
        return x + self.drop_paths[i](scale2(mlp(norm2(x))))

    def forward(self, images: torch.Tensor):
        x = self.trunk.embed(images)
        outs = []
        for i in range(self.num_layers):
            if self.with_cp and self.training:
                x = checkpoint(self._block, i, x, use_reentrant=False)
            else:
                x = self._block(i, x)
            if i in self.out_indices:
                outs.append(x.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
