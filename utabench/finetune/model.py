"""The fine-tuned classifier: a trainable copy of a backbone's ViT tower, the mean of its last block's patch tokens,
a LayerNorm and a linear head (FT-CLIP / BEiT's `use_mean_pooling`: the tower's own final norm, CLS and projection
are not used), with the layer map that timm's layer-wise lr decay reads. The backbone's trunk (backbones/trunk.py)
gives the patch tokens, the stochastic depth, the parts to drop, the layer map and the parameters not decayed."""

from __future__ import annotations

from typing import Callable, Set

import torch
from timm.layers import trunc_normal_
from torch import nn

from utabench.backbones.base import open_trunk


class Classifier(nn.Module):
    def __init__(self, backbone, num_classes: int, drop_path: float = 0.0, head_init_scale: float = 0.001):
        super().__init__()
        self.trunk = open_trunk(backbone, "be fine-tuned for classification")  # over a copy: the backbone stays
        self.trunk.drop_unused()
        self.tower = self.trunk.tower.requires_grad_(True)
        self.fc_norm = nn.LayerNorm(self.trunk.width, eps=1e-6)
        self.head = nn.Linear(self.trunk.width, num_classes)
        trunc_normal_(self.head.weight, std=0.02)
        with torch.no_grad():  # FT-CLIP / BEiT: a small head, so fine-tuning starts near the pretrained features
            self.head.weight.mul_(head_init_scale)
            self.head.bias.zero_()
        if drop_path > 0:
            self.trunk.set_drop_path(drop_path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc_norm(self.trunk.patch_tokens(images).mean(dim=1)))

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """timm's layer map: embeddings 0, block i -> i + 1, everything else (norm, head) after the last block."""
        def layer(name: str) -> int:
            inside = self.trunk.layer_of(name[len("tower."):]) if name.startswith("tower.") else None
            return self.trunk.depth + 1 if inside is None else inside

        return layer

    def no_weight_decay(self) -> Set[str]:
        names = {name for name, _ in self.named_parameters()}
        return {f"tower.{name}" for name in self.trunk.no_weight_decay()} & names
