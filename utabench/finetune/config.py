"""Fine-tuning recipes (YAML under utabench/configs/finetune/ or a path), checked against their schema: the optimiser
and schedule (the shared trainer's), layer-wise lr decay, EMA, label smoothing, timm's train augmentation and the
eval transform."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from utabench.core.configfile import bundled_config, read_yaml_mapping
from utabench.core.errors import UtabenchError
from utabench.core.schema import Schema, validated_dict
from utabench.training.config import OptimConfig


class Augment(Schema):
    """Arguments of timm.data.create_transform for training."""

    auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1"
    re_prob: float = Field(0.25, ge=0.0, le=1.0)
    re_mode: Literal["const", "rand", "pixel"] = "pixel"
    re_count: PositiveInt = 1
    scale: Tuple[PositiveFloat, PositiveFloat] = (0.08, 1.0)
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    color_jitter: NonNegativeFloat = 0.4
    interpolation: Literal["bicubic", "bilinear", "random"] = "bicubic"


class EvalTransform(Schema):
    crop_pct: float = Field(0.875, gt=0.0, le=1.0)
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"


class FinetuneConfig(Schema):
    objective: Literal["finetune"] = "finetune"
    optim: OptimConfig
    warmup_lr_init: NonNegativeFloat = 0.0
    layer_decay: float = Field(..., gt=0.0, le=1.0)
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    ema: Optional[float] = Field(None, gt=0.0, lt=1.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    head_init_scale: PositiveFloat = 0.001
    augment: Augment = Augment()
    eval: EvalTransform = EvalTransform()
    shown: Literal["ema", "raw"] = "ema"  # which weights' accuracy the record's top1 / top5 give
    precision: Literal["auto", "fp32", "amp_bf16"] = "auto"
    checkpoint_every: PositiveInt = 1000
    workers: NonNegativeInt = 8
    seed: NonNegativeInt = 0


def load_finetune_recipe(name: str) -> Dict[str, Any]:
    """A recipe under utabench/configs/finetune/ (`ftclip-b16`, `ftclip-l14`, `world`) or a YAML path."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else bundled_config(f"finetune/{name}.yaml")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in bundled_config("finetune").glob("*.yaml")))
        raise UtabenchError(f"unknown fine-tuning recipe {name!r}; known: {known} (or a .yaml path)")
    raw = read_yaml_mapping(path, "fine-tuning recipe", "see utabench/configs/finetune/")
    recipe = validated_dict(FinetuneConfig, raw, f"fine-tuning recipe {path}", defaults=True)
    if recipe["ema"] is None and recipe["shown"] == "ema":
        raise UtabenchError(f"fine-tuning recipe {path}: shown: ema needs `ema: DECAY`")
    return recipe
