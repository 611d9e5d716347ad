"""The student: a UTA ViT (timm `Eva`, built from a `uta` model config) whose forward takes a patch mask.

Per-token outputs go through the model's own `norm` and `head`, the path its CLS takes at zero-shot time, so every
output token lives in the teacher's joint space. For `uta` only CLS and the kept patches enter the blocks: the
absolute position embeddings are added before the masked patches are dropped, and the RoPE table is gathered at the
kept positions, so each kept token keeps its place in the grid. The positional-embedding ablation builds it without
the absolute embedding, or without RoPE too (`pos_embed`). For `mim` / `uta+mim` a learned [MASK] embedding
replaces the masked patch embeddings before the position embeddings are added (as in BEiT / EVA); it is not part
of the exported backbone.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from timm.layers import trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from utabench.backbones.uta import build_uta_vision, load_uta_config
from utabench.pretrain.objectives import Objective


class Student(nn.Module):
    def __init__(self, model: str, objective: Objective, drop_path: float = 0.0, grad_checkpointing: bool = False,
                 pos_embed: Optional[Dict[str, bool]] = None):
        """`pos_embed` ({absolute, rope}, pretrain/config.py's PosEmbedConfig): the positional embeddings it trains
        with (default: both); without RoPE its `config` says `rope: false`, so the export builds the same model."""
        super().__init__()
        self.model_name = model
        self.config = load_uta_config(model)
        pos_embed = pos_embed or {}
        if not pos_embed.get("rope", True):
            self.config = {**self.config, "vision": {**self.config["vision"], "rope": False}}
        self.visual = build_uta_vision(self.config["vision"], self.config["embed_dim"], drop_path_rate=drop_path,
                                       absolute_pos=pos_embed.get("absolute", True))
        self.objective = objective
        self.grad_checkpointing = grad_checkpointing
        self.mask_token: Optional[nn.Parameter] = None
        if objective.needs_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, self.visual.embed_dim))
            trunc_normal_(self.mask_token, std=0.02)

    @property
    def grid(self) -> Tuple[int, int]:
        return tuple(self.visual.patch_embed.grid_size)

    def forward(self, images: torch.Tensor, mask: Optional[torch.Tensor] = None,
                keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """images (B, 3, H, W); mask (B, N) True = masked; keep (B, K) kept patch indices (for `uta`).
        Returns tokens in the joint space: (B, 1 + K, D) for `uta`, else (B, 1 + N, D)."""
        v = self.visual
        x = v.patch_embed(images)
        if self.mask_token is not None:
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x, rope = v._pos_embed(x)
        if self.objective.student_input == "kept":
            patches = x[:, 1:].gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
            x = torch.cat([x[:, :1], patches], dim=1)
            if rope is not None:  # (B, 1, K, rope dim): one table per sample, broadcast over heads
                rope = rope[keep].unsqueeze(1)
        x = v.norm_pre(x)
        for block in v.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, rope=rope, use_reentrant=False)
            else:
                x = block(x, rope=rope)
        return v.head(v.norm(x))
