"""The fine-tuned classifier: a trainable copy of a backbone's ViT tower, the mean of its last block's patch tokens,
a LayerNorm and a linear head (FT-CLIP / BEiT's `use_mean_pooling`: the tower's own final norm, CLS and projection
are not used), with the layer map that timm's layer-wise lr decay reads."""

from __future__ import annotations

import copy
from typing import Dict, Set

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn

from utabench.backbones.layer_map import group_matcher
from utabench.core.errors import NotApplicable, UtabenchError

_NO_DECAY = ("tower.cls_token", "tower.pos_embed", "tower.class_embedding", "tower.positional_embedding")


class Classifier(nn.Module):
    def __init__(self, backbone, num_classes: int, drop_path: float = 0.0, head_init_scale: float = 0.001):
        super().__init__()
        try:
            tower = backbone.vision_tower()
        except NotApplicable as exc:
            raise UtabenchError(f"{backbone.spec.key} cannot be fine-tuned for classification: {exc}") from None
        self.tower = copy.deepcopy(tower).requires_grad_(True)  # the evaluated backbone stays as it is
        self._drop_unused()
        self.depth = backbone.info.depth
        self.fc_norm = nn.LayerNorm(backbone.info.width, eps=1e-6)
        self.head = nn.Linear(backbone.info.width, num_classes)
        trunc_normal_(self.head.weight, std=0.02)
        with torch.no_grad():  # FT-CLIP / BEiT: a small head, so fine-tuning starts near the pretrained features
            self.head.weight.mul_(head_init_scale)
            self.head.bias.zero_()
        self._set_drop_path(drop_path)

    def _drop_unused(self) -> None:
        """The tower's final norm, pooling head and projection are not used (DDP refuses parameters without
        gradients)."""
        for name in ("norm", "fc_norm", "head", "head_drop", "ln_post", "attn_pool"):
            if isinstance(getattr(self.tower, name, None), nn.Module):
                setattr(self.tower, name, nn.Identity())
        if isinstance(getattr(self.tower, "proj", None), nn.Parameter):
            self.tower.proj = None

    def _set_drop_path(self, rate: float) -> None:
        if rate <= 0:
            return
        blocks = getattr(self.tower, "blocks", None)
        if blocks is None or not hasattr(blocks[0], "drop_path1"):
            raise UtabenchError("drop path needs a timm tower (uta, eva02); open_clip's blocks have none: set "
                                "drop_path: 0")
        for block, value in zip(blocks, torch.linspace(0, rate, len(blocks)).tolist()):
            block.drop_path1, block.drop_path2 = DropPath(value), DropPath(value)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The last block's patch tokens (B, N, C), before the tower's final norm, without prefix tokens."""
        out = self.tower.forward_intermediates(images, indices=[self.depth - 1], intermediates_only=True,
                                               output_fmt="NLC")
        return (out["image_intermediates"] if isinstance(out, dict) else out)[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc_norm(self.patch_tokens(images).mean(dim=1)))

    def group_matcher(self, coarse: bool = False) -> Dict:
        """timm's layer map: embeddings 0, block i -> i + 1, everything else (norm, head) after the last block."""
        return group_matcher("tower.")

    def no_weight_decay(self) -> Set[str]:
        names = {name for name, _ in self.named_parameters()}
        return {name for name in _NO_DECAY if name in names}
