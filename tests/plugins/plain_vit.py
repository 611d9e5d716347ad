"""A backbone family defined outside utabench, as a user's plugin module would: a small hand-written ViT (plain
torch, neither timm nor open_clip: learned absolute position embeddings, a CLS token, pre-norm blocks with their own
attention module) that brings its own trunk, so detection, segmentation and fine-tuning run on it. Loaded with
UTABENCH_PLUGINS=plain_vit.

Models: `plain-vit:tiny` (the embedded world's size: 64 px, patch 8, width 64, 4 blocks) and `plain-vit:misshapen`,
whose tower is narrower than the width its info declares (what a plugin that sizes its info from the wrong config
gets): dense and fine-tuning tasks refuse it before any training.
"""

from __future__ import annotations

import copy
from typing import Callable, List, Optional, Sequence, Set

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms

from utabench.backbones.base import Backbone, BackboneInfo, BackboneSpec, ImageOptions, count_params, resolve_blocks
from utabench.backbones.trunk import TokenMap, Trunk
from utabench.core.checkpoint import load_strict, read_state_dict
from utabench.core.errors import UtabenchError
from utabench.core.registry import BACKBONES

CONFIGS = {"tiny": dict(image_size=64, patch_size=8, width=64, depth=4, heads=2, declared_width=64),
           "misshapen": dict(image_size=64, patch_size=8, width=32, depth=4, heads=2, declared_width=64)}
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width), Attention(width, heads)
        self.norm2, self.mlp = nn.LayerNorm(width), nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                                                   nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PlainViT(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int):
        super().__init__()
        self.grid = image_size // patch_size
        self.patch = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid ** 2, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def block_outputs(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Every block's output tokens (B, 1 + N, C), CLS first."""
        x = self.patch(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block_outputs(images)[-1][:, 0])


def _unscaled(y: torch.Tensor) -> torch.Tensor:
    return y


class PlainTokenMap(TokenMap):
    def __init__(self, vit: PlainViT):
        super().__init__(vit.patch, vit.pos_embed[:, 1:].reshape(1, vit.grid, vit.grid, -1), vit.blocks)

    def attention(self, i, x, grid):
        return self.blocks[i].attn(x)  # no position code inside attention: any layout is the same computation

    def parts(self, i):
        b = self.blocks[i]
        return b.norm1, _unscaled, b.norm2, b.mlp, _unscaled


class PlainTrunk(Trunk):
    @property
    def patch_size(self) -> int:
        return int(self.tower.patch.kernel_size[0])

    @property
    def width(self) -> int:
        return int(self.tower.patch.out_channels)

    @property
    def depth(self) -> int:
        return len(self.tower.blocks)

    def token_map(self) -> PlainTokenMap:
        return PlainTokenMap(self.tower)

    def layer_of(self, name: str) -> Optional[int]:
        if name.startswith(("patch.", "cls_token", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return None

    def patch_tokens(self, images):
        return self.tower.block_outputs(images)[-1][:, 1:]

    def drop_unused(self):
        self.tower.norm = nn.Identity()

    def no_weight_decay(self) -> Set[str]:
        return {"cls_token", "pos_embed"}


def check_plain_model(model: str) -> None:
    if model not in CONFIGS:
        raise UtabenchError(f"unknown plain-vit model {model!r}; known: {', '.join(CONFIGS)}")


class PlainViTBackbone(Backbone):
    def __init__(self, spec: BackboneSpec):
        super().__init__()
        cfg = dict(CONFIGS[spec.model])
        declared = cfg.pop("declared_width")
        if spec.options.get("image_size"):
            cfg["image_size"] = int(spec.options["image_size"])
        self.vit = PlainViT(**cfg)
        if spec.checkpoint:
            load_strict(self.vit, read_state_dict(spec.checkpoint), spec.checkpoint)
        size = cfg["image_size"]
        self._transform = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(size),
            transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        self.info = BackboneInfo(
            family="plain-vit", model=spec.model, params=count_params(self.vit), patch_size=cfg["patch_size"],
            input_size=size, width=declared, depth=cfg["depth"], embed_dim=None, num_prefix_tokens=1, has_text=False,
            weights=spec.checkpoint or f"random-init(seed={spec.options.get('seed', 0)})")

    def image_transform(self) -> Callable:
        return self._transform

    def token_features(self, images: torch.Tensor, blocks: Sequence[int]) -> List[torch.Tensor]:
        outs = self.vit.block_outputs(images)
        return [outs[i] for i in resolve_blocks(blocks, self.info.depth)]

    def vision_tower(self) -> nn.Module:
        return self.vit

    def vision_trunk(self) -> PlainTrunk:
        return PlainTrunk(copy.deepcopy(self.vit))


@BACKBONES.register("plain-vit", help="a hand-written ViT from a plugin: plain-vit:tiny", schema=ImageOptions,
                    check=check_plain_model)
def build_plain_vit(spec: BackboneSpec) -> Backbone:
    return PlainViTBackbone(spec)
