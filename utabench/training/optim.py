"""The shared trainer's default optimiser pieces: AdamW's parameter groups (no weight decay on biases, norms,
embeddings and learned tokens) and whether torch has a fused AdamW kernel for the device."""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

_NO_DECAY = ("cls_token", "pos_embed", "mask_token", "positional_embedding", "logit_scale", "token_embedding")


def param_groups(module: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """No weight decay on biases, norms, embeddings and learned tokens (BEiT / EVA convention)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or any(k in name for k in _NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fused_adamw(device: torch.device) -> bool:
    """Whether torch has a fused AdamW kernel for the device (CUDA; CPU from torch 2.4). One kernel over every
    parameter: on 2 CPU cores it steps the world teacher's 3.7 M parameters in 2.4 ms where the default takes 21.6."""
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return device.type == "cuda" or (device.type == "cpu" and version >= (2, 4))
