"""Patch-size conversion (EVA-02's patch 14 -> 16 for detection and segmentation).

The patch-embedding kernel is resized bicubically (EVA-02's conversion does the same, without rescaling the
weights) and the patch position-embedding grid is resized so it covers the same image at the new patch size
(224 px: 16 x 16 patches of 14 -> 14 x 14 patches of 16). The token map has no CLS.
"""

from __future__ import annotations

import torch
from torch import nn

from utabench.backbones.patch_geometry import resize_grid, resize_patch_kernel
from utabench.backbones.trunk import TokenMap
from utabench.core.errors import UtabenchError


def convert_trunk_patch_size(trunk: TokenMap, patch_size: int) -> None:
    """Convert a built token map in place: new patch convolution, position grid for the same pretraining image."""
    old = trunk.proj
    conv = nn.Conv2d(old.in_channels, old.out_channels, patch_size, stride=patch_size, bias=old.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(resize_patch_kernel(old.weight, patch_size))
        if old.bias is not None:
            conv.bias.copy_(old.bias)
    image = trunk.pos_embed.shape[1] * old.kernel_size[0]
    if image % patch_size:
        raise UtabenchError(f"the pretraining image ({image} px) is not a multiple of patch size {patch_size}")
    grid = image // patch_size
    trunk.proj = conv
    trunk.pos_embed = nn.Parameter(resize_grid(trunk.pos_embed.detach(), (grid, grid)))
