"""Detection neck of ViTDet: the simple feature pyramid built from the last ViT map, and the channel LayerNorm
(`LN2d`) it and the ViTDet-style heads use.

From the (B, C, H, W) map at stride p (the patch size), each scale factor s gives one level at stride p / s:
4 -> two 2x transposed convolutions (LN2d + GELU between, channels C/2 then C/4), 2 -> one (C/2), 1 -> identity,
0.5 -> 2x2 max-pool; then a 1x1 and a 3x3 convolution (no bias, LN2d) to `out_channels`; plus one more level by
stride-2 max-pooling the last (P6). Outputs are contiguous (mmcv's CPU RoIAlign needs it).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import nn


class LN2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _upsample(channels: int, scale: float) -> nn.Module:
    if scale == 4.0:
        return nn.Sequential(nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), LN2d(channels // 2), nn.GELU(),
                             nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2))
    if scale == 2.0:
        return nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)
    if scale == 1.0:
        return nn.Identity()
    if scale == 0.5:
        return nn.MaxPool2d(2, stride=2)
    raise ValueError(f"simple feature pyramid scale {scale} is not one of 4, 2, 1, 0.5")


def _width(channels: int, scale: float) -> int:
    return {4.0: channels // 4, 2.0: channels // 2}.get(scale, channels)


class SimpleFeaturePyramid(BaseModule):
    def __init__(self, in_channels: int, out_channels: int = 256, scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 top_pool: bool = True, init_cfg=None):
        super().__init__(init_cfg)
        norm = dict(type="LN2d", eps=1e-6)
        self.scale_factors = [float(s) for s in scale_factors]
        self.stages = nn.ModuleList()
        for scale in self.scale_factors:
            width = _width(in_channels, scale)
            self.stages.append(nn.Sequential(
                _upsample(in_channels, scale),
                ConvModule(width, out_channels, 1, bias=False, norm_cfg=norm, act_cfg=None),
                ConvModule(out_channels, out_channels, 3, padding=1, bias=False, norm_cfg=norm, act_cfg=None),
            ))
        self.top_pool = top_pool

    def forward(self, inputs):
        x = inputs[-1]
        outs = [stage(x).contiguous() for stage in self.stages]
        if self.top_pool:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2).contiguous())
        return tuple(outs)
