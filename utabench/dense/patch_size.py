"""Patch-size conversion (EVA-02's patch 14 -> 16 for detection and segmentation).

The patch-embedding kernel is resized bicubically (EVA-02's conversion does the same, without rescaling the
weights) and the patch position-embedding grid is resized so it covers the same image at the new patch size
(224 px: 16 x 16 patches of 14 -> 14 x 14 patches of 16). The prefix (CLS) rows are kept as they are.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from utabench.core.errors import UtabenchError


def resize_patch_kernel(weight: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(C_out, C_in, p, p) -> (C_out, C_in, patch_size, patch_size), bicubic."""
    out = F.interpolate(weight.float(), size=(patch_size, patch_size), mode="bicubic", align_corners=False)
    return out.to(weight.dtype)


def resize_pos_grid(pos: torch.Tensor, grid: int, prefix: int) -> torch.Tensor:
    """(1, prefix + g*g, C) -> (1, prefix + grid*grid, C), bicubic on the patch rows."""
    head, rows = pos[:, :prefix], pos[:, prefix:]
    old = int(round(math.sqrt(rows.shape[1])))
    if old * old != rows.shape[1]:
        raise UtabenchError(f"position embeddings of {rows.shape[1]} patches are not a square grid")
    rows = rows.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    rows = F.interpolate(rows, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([head, rows.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)], dim=1)


def convert_patch_size(state: Dict[str, torch.Tensor], patch_size: int, image_size: int,
                       kernel_key: str = "visual.patch_embed.proj.weight", pos_key: str = "visual.pos_embed",
                       prefix: int = 1) -> Dict[str, torch.Tensor]:
    """A checkpoint converted to `patch_size` at `image_size` (default keys: the UTA release layout). RoPE tables are
    derived from the grid, so stale `*rope.freqs_*` entries are dropped; the builder recomputes them."""
    if kernel_key not in state or pos_key not in state:
        raise UtabenchError(f"checkpoint has no {kernel_key} / {pos_key} to convert to patch {patch_size}")
    if image_size % patch_size:
        raise UtabenchError(f"image size {image_size} is not a multiple of patch size {patch_size}")
    out = {k: v for k, v in state.items() if "rope.freqs_" not in k}
    out[kernel_key] = resize_patch_kernel(state[kernel_key], patch_size)
    out[pos_key] = resize_pos_grid(state[pos_key], image_size // patch_size, prefix)
    return out


def convert_trunk_patch_size(trunk: nn.Module, patch_size: int) -> None:
    """Convert a built dense trunk in place: new patch convolution, position grid for the same pretraining image."""
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
    pos = resize_pos_grid(trunk.pos_embed.reshape(1, -1, trunk.pos_embed.shape[-1]), grid, 0)
    trunk.proj = conv
    trunk.pos_embed = nn.Parameter(pos.reshape(1, grid, grid, -1))
