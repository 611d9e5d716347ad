"""A ViT's patch geometry at another patch size or input size: the patch-embedding kernel resized bicubically without
rescaling the weights (EVA-02's patch 14 -> 16 conversion does the same) and the patch position-embedding grid resized
bicubically (as ViTDet). Dense transfer's trunks and the contrastive fine-tuning of a student both use them, so
neither needs the other's libraries."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def resize_patch_kernel(weight: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(C_out, C_in, p, p) -> (C_out, C_in, patch_size, patch_size), bicubic."""
    out = F.interpolate(weight.float(), size=(patch_size, patch_size), mode="bicubic", align_corners=False)
    return out.to(weight.dtype)


def resize_grid(pos: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """(1, h, w, C) position embeddings resized (bicubic, as ViTDet) to (1, H, W, C)."""
    if tuple(pos.shape[1:3]) == tuple(grid):
        return pos
    out = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=grid, mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).to(pos.dtype)
