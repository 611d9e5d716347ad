"""LLaVA's vision-language projectors, with the original parameter names, and reading `mm_projector.bin`.

`linear` is one Linear (LLaVA v1); `mlpNx_gelu` is Linear (GELU Linear) x (N-1) (LLaVA-1.5's `mlp2x_gelu`). Their
state-dict keys are the original ones below `model.mm_projector.` (`weight` / `0.weight`, `2.weight`, ...), so a
projector trained by the original code loads, and ours loads there.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from utabench.core.checkpoint import load_strict, read_state_dict
from utabench.core.errors import UtabenchError

PREFIX = "model.mm_projector."


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not match or int(match.group(1)) < 1:
        raise UtabenchError(f"projector type {kind!r}: use linear or mlpNx_gelu (e.g. mlp2x_gelu)")
    layers = [nn.Linear(in_dim, out_dim)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)


def projector_state(projector: nn.Module) -> Dict[str, torch.Tensor]:
    """The projector's tensors under their original LLaVA names."""
    return {PREFIX + k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()}


def load_projector(projector: nn.Module, path: str | Path) -> None:
    """Load an `mm_projector.bin` (the original stage-1 output, or ours) into `projector`, strictly."""
    state = read_state_dict(path)
    own = {k.split("mm_projector.", 1)[1]: v for k, v in state.items() if "mm_projector." in k}
    if not own:
        raise UtabenchError(f"{path} holds no `mm_projector.*` tensors; expected LLaVA's mm_projector.bin")
    load_strict(projector, own, str(path))
