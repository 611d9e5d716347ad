"""The parts of a training configuration that every trainer reads the same way: the optimiser and schedule section
(`optim:` of a pretraining config, a fine-tuning recipe or a LLaVA stage) and the merge of a configuration with the
one it builds on (`base:` chains, a dataset entry's recipe overrides)."""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Tuple

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from utabench.core.schema import Schema


class OptimConfig(Schema):
    """The shared trainer's optimiser and schedule: AdamW, linear warm-up, cosine to `min_lr`."""

    batch_size: PositiveInt = 4096  # global, over all processes and accumulation steps
    epochs: PositiveFloat = 150
    steps: Optional[PositiveInt] = None  # overrides `epochs`
    lr: PositiveFloat = 1.5e-3
    min_lr: NonNegativeFloat = 1.0e-5
    warmup_epochs: NonNegativeFloat = 1
    warmup_steps: Optional[NonNegativeInt] = None  # overrides `warmup_epochs`
    weight_decay: NonNegativeFloat = 0.05
    betas: Tuple[float, float] = (0.9, 0.98)
    eps: PositiveFloat = 1.0e-6
    clip_grad: Optional[PositiveFloat] = None
    grad_accum: PositiveInt = 1  # micro-batches per optimiser step


def deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """`base` with `override`'s keys in it, mappings merged key by key (override wins); neither is changed."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
