"""One backbone through LLaVA in a work directory: stage 1, stage 2, LLaVA-Bench answers, reviews, scores.

    <work>/stage1/  mm_projector.bin, config.json, checkpoints/, final.json
    <work>/stage2/  config.json, model.safetensors, tokenizer files, checkpoints/, final.json
    <work>/answers-<model>.jsonl, <work>/reviews-<model>-<judge>.jsonl

A finished stage (its `final.json` fingerprint equals the configuration's, which covers the backbone's weights, the
data files, the LLM and, for stage 2, stage 1's result) is reused; an unfinished one resumes from its last
checkpoint. `stage_setup` reads the setup a stage trained with from its `final.json`. `load_finetuned` reads a
stage-2 folder, ours or the original LLaVA's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Literal, Optional

import torch
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt, field_validator

from utabench.backbones.factory import backbone_entry
from utabench.core.checkpoint import load_strict, read_state_dict
from utabench.core.configfile import bundled_config, read_yaml_mapping
from utabench.core.context import Setup
from utabench.core.errors import UtabenchError
from utabench.core.fingerprint import stat_fingerprint
from utabench.core.schema import Schema, validated_dict
from utabench.llava.encoder import SELECT_FEATURES, EncoderSpec, FrozenEncoder
from utabench.llava.model import HostedLlava, build, host, llm_dtype, load_tokenizer
from utabench.llava.projector import build_projector
from utabench.llava.train import TEMPLATE_OF_STAGE, StageRecipe
from utabench.training.config import OptimConfig, deep_merge
from utabench.training.fingerprint import run_fingerprint
from utabench.training.setup import read_setup


class EncoderConfig(Schema):
    layer: int = -2  # the block whose tokens feed the projector (LLaVA's default: the second to last)
    select: Literal[SELECT_FEATURES] = "patch"


class StageConfig(Schema):
    optim: OptimConfig


class GenerationConfig(Schema):
    max_new_tokens: PositiveInt
    temperature: NonNegativeFloat = 0.0


class LlavaRecipe(Schema):
    """A LLaVA recipe: every key is required, so a recipe says everything it trains with."""

    projector: str  # linear or mlpNx_gelu
    encoder: EncoderConfig
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16"]
    max_length: PositiveInt
    precision: Literal["auto", "fp32", "amp_bf16"]
    stage1: StageConfig
    stage2: StageConfig
    generation: GenerationConfig
    checkpoint_every: PositiveInt
    workers: NonNegativeInt
    seed: NonNegativeInt

    @field_validator("projector")
    @classmethod
    def _projector(cls, value: str) -> str:
        build_projector(value, 1, 1)  # refuses an unknown projector type
        return value


def load_recipe(name: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A recipe under utabench/configs/llava/ (`paper`, `world`) or a YAML path, with the dataset's overrides."""
    path = Path(name)
    if not path.is_file():
        path = bundled_config(f"llava/{name}.yaml")
    raw = read_yaml_mapping(path, "LLaVA recipe", "use paper, world or a YAML file like utabench/configs/llava/paper.yaml")
    where = f"LLaVA recipe {path}" + (" with the dataset's overrides" if overrides else "")
    recipe = validated_dict(LlavaRecipe, deep_merge(raw, overrides or {}), where, defaults=True)
    recipe["source"] = str(path)
    return recipe


def stage_config(recipe: Dict[str, Any], stage: int, data: Dict[str, str], backbone, llm: str,
                 init: Optional[str]) -> Dict[str, Any]:
    """The shared trainer's configuration of one stage (everything in it is fingerprinted)."""
    if not isinstance(data, dict) or not data.get("data") or not data.get("images"):
        raise UtabenchError(f"LLaVA stage {stage} needs `stage{stage}: {{data: FILE.json, images: DIR}}` in the "
                            "dataset entry (LLaVA's json and its image folder)")
    llm_path = Path(llm).expanduser()
    return {
        "objective": f"llava-stage{stage}", "stage": stage, "template": TEMPLATE_OF_STAGE[stage],
        "data": {"data": str(Path(data["data"]).expanduser()), "images": str(Path(data["images"]).expanduser()),
                 "fingerprint": stat_fingerprint(Path(data["data"]).expanduser())},
        "backbone": backbone_entry(backbone), "backbone_sha256": backbone.info.weights_sha256,
        "llm": str(llm_path), "llm_fingerprint": stat_fingerprint(*sorted(llm_path.glob("*.safetensors")),
                                                                    *sorted(llm_path.glob("*.bin"))),
        "init_projector": init, "init_fingerprint": stat_fingerprint(Path(init)) if init else None,
        "projector": recipe["projector"], "encoder": dict(recipe["encoder"]), "llm_dtype": recipe["llm_dtype"],
        "max_length": recipe["max_length"], "precision": recipe["precision"],
        "optim": dict(recipe[f"stage{stage}"]["optim"]), "checkpoint_every": recipe["checkpoint_every"],
        "workers": recipe["workers"], "seed": recipe["seed"],
    }


def train_stage(cfg: Dict[str, Any], backbone, out: Path, ctx, log: Callable[[str], None]) -> Path:
    from utabench.training.trainer import Trainer

    done = out / "final.json"
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == run_fingerprint(cfg):
        return out
    log(f"[{backbone.spec.key}] LLaVA stage {cfg['stage']} ({cfg['template']}, {cfg['data']['data']}) into {out}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))  # the new projector's initial weights are part of the configuration
        hosted = build(backbone, EncoderSpec(**cfg["encoder"]), cfg["projector"], cfg["llm"],
                       llm_dtype(cfg["llm_dtype"], ctx.device), cfg["init_projector"])
    hosted.model.to(ctx.device)
    meta = {"backbone": cfg["backbone"], "encoder": cfg["encoder"], "projector": cfg["projector"], "llm": cfg["llm"]}
    trainer = Trainer(cfg, StageRecipe(cfg, hosted, meta), out, device=ctx.device, dist=ctx.dist,
                      progress=ctx.progress, log=log)
    trainer.run()
    return out


def stage_setup(folder: Path) -> Optional[Setup]:
    """The setup (global batch, precision, device, processes) a finished stage in `folder` trained with, as its
    `final.json` records it (None for a stage finished before setups were recorded)."""
    return read_setup(json.loads((Path(folder) / "final.json").read_text()))


def _llm_config(config: Dict[str, Any]):
    from transformers import AutoConfig

    fields = {k: v for k, v in config.items() if not k.startswith("mm_") and k not in
              ("utabench", "architectures", "model_type", "tune_mm_mlp_adapter", "image_aspect_ratio",
               "freeze_mm_mlp_adapter", "mm_patch_merge_type")}
    model_type = str(config.get("model_type", "llama")).removeprefix("llava_")
    try:
        return AutoConfig.for_model(model_type, **fields)
    except ValueError as exc:
        raise UtabenchError(f"LLaVA checkpoint config: its LLM type {model_type!r} is unknown to transformers "
                            f"({exc})") from None


def _weights(folder: Path) -> Dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise UtabenchError(f"{folder} holds no model.safetensors or pytorch_model*.bin; expected a LLaVA stage-2 folder")
    state: Dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_state_dict(path))
    return state


def load_finetuned(backbone, folder: str | Path, dtype: torch.dtype) -> HostedLlava:
    """A stage-2 LLaVA folder (config.json with `mm_*` keys, LLM and `model.mm_projector.*` weights, tokenizer) with
    `backbone` as its vision tower; the backbone must give what the projector was trained on."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise UtabenchError(f"{folder} has no config.json; expected a LLaVA stage-2 output folder")
    config = json.loads((folder / "config.json").read_text())
    ours = config.get("utabench", {})
    encoder = FrozenEncoder(backbone, EncoderSpec(int(config.get("mm_vision_select_layer", -2)),
                                                  str(config.get("mm_vision_select_feature", "patch"))))
    if int(config.get("mm_hidden_size", encoder.width)) != encoder.width:
        raise UtabenchError(f"{folder} was trained on encoder features of width {config['mm_hidden_size']}, but "
                            f"{backbone.spec.key} gives width {encoder.width}; use the backbone it was trained with "
                            f"({config.get('mm_vision_tower')})")
    if "num_image_tokens" in ours and int(ours["num_image_tokens"]) != encoder.num_tokens:
        raise UtabenchError(f"{folder} expands each <image> to {ours['num_image_tokens']} tokens, but "
                            f"{backbone.spec.key} gives {encoder.num_tokens} (its input size or patch size differs); "
                            f"use the backbone it was trained with ({config.get('mm_vision_tower')})")
    state = _weights(folder)
    llm = AutoModelForCausalLM.from_config(_llm_config(config), dtype=dtype)
    projector = build_projector(config.get("mm_projector_type", "linear"), encoder.width, llm.config.hidden_size)
    load_strict(projector, {k.split("mm_projector.", 1)[1]: v for k, v in state.items() if "mm_projector." in k},
                str(folder))
    llm_state = {k: v for k, v in state.items() if "mm_projector." not in k and ".vision_tower." not in k}
    if "lm_head.weight" not in llm_state and llm.config.tie_word_embeddings:
        llm_state["lm_head.weight"] = llm_state["model.embed_tokens.weight"]
    load_strict(llm, llm_state, str(folder))
    return host(encoder, projector, llm, load_tokenizer(folder, llm.config))


def weights_fingerprint(folder: str | Path) -> str:
    """Of a stage-2 folder's config and weight files (what the answers depend on)."""
    folder = Path(folder).expanduser()
    return stat_fingerprint(folder / "config.json", *sorted(folder.glob("*.safetensors")),
                              *sorted(folder.glob("pytorch_model*.bin")))
