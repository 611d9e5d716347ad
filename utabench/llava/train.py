"""LLaVA's two training stages as a recipe for the shared trainer (AdamW, warm-up + cosine, accumulation, bf16 on
GPU, checkpoints every `checkpoint_every` steps with exact resume, DDP under torchrun).

Stage 1 trains the projector alone on caption pairs (`plain` template); stage 2 trains the projector and the LLM
on instruction conversations (`vicuna_v1`). The encoder is frozen in both. A stage's output folder holds, in the
original LLaVA layout: stage 1 `mm_projector.bin` (+ config.json); stage 2 `config.json` (the LLM's config plus
LLaVA's `mm_*` keys), `model.safetensors` (the LLM's tensors and `model.mm_projector.*`) and the tokenizer. The
encoder is not saved; its backbone entry and feature selection are in config.json under `utabench`, and in the
safetensors metadata.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Dict

import torch
from safetensors.torch import save_file
from torch import nn

from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write, atomic_write_json
from utabench.llava.conversation import IGNORE_INDEX
from utabench.llava.data import ConversationSet, collate, read_conversations
from utabench.llava.model import HostedLlava
from utabench.llava.projector import projector_state

TEMPLATE_OF_STAGE = {1: "plain", 2: "vicuna_v1"}


class TrainedParts(nn.Module):
    """The modules a stage trains (what DDP wraps and checkpoints hold); its forward runs the whole Llava."""

    def __init__(self, hosted: HostedLlava, stage: int):
        super().__init__()
        self.parts = hosted.trained_modules(stage)
        object.__setattr__(self, "_llava", hosted.model)  # not a submodule: the frozen encoder stays out

    def forward(self, **batch):
        return self._llava(**batch)


class StageRecipe:
    def __init__(self, cfg: Dict[str, Any], hosted: HostedLlava, meta: Dict[str, Any]):
        self.cfg, self.hosted, self.stage, self.meta = cfg, hosted, int(cfg["stage"]), meta
        hosted.model.requires_grad_(False)
        self.module = TrainedParts(hosted, self.stage).requires_grad_(True)
        records = read_conversations(cfg["data"]["data"])
        tokenizer = hosted.tokenizer
        self.dataset = ConversationSet(records, cfg["data"]["images"], hosted.encoder.backbone.image_transform(),
                                       tokenizer, cfg["template"], hosted.image_token_id, hosted.num_image_tokens,
                                       int(cfg["max_length"]), source=str(cfg["data"]["data"]))
        self.collate = functools.partial(collate, pad_id=tokenizer.pad_token_id)

    def loss(self, model: nn.Module, batch: Dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        if not bool((batch["labels"] != IGNORE_INDEX).any()):
            raise UtabenchError(
                f"every label of a batch is ignored (stage {self.stage}, template {self.cfg['template']}): nothing "
                "would be learned from it; the answers were cut off by max_length, or the data's turns are empty")
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return model(**batch).loss

    def export(self, out_dir: Path, steps: int) -> Dict[str, Any]:
        out_dir = Path(out_dir)
        meta = {**self.meta, "stage": self.stage, "template": self.cfg["template"], "steps": steps}
        if self.stage == 1:
            atomic_write(out_dir / "mm_projector.bin", lambda p: torch.save(projector_state(self.hosted.projector), p))
            atomic_write_json(out_dir / "config.json", llava_config(self.hosted, meta))
        else:
            save_llava(self.hosted, out_dir, meta)
        return {"llava": meta, "output": str(out_dir)}


def llava_config(hosted: HostedLlava, meta: Dict[str, Any]) -> Dict[str, Any]:
    """The LLM's config.json plus the original LLaVA's `mm_*` keys, and ours under `utabench`."""
    llm = hosted.model.model.language_model.config.to_dict()
    projector = meta["projector"]
    return {**llm, "architectures": ["LlavaLlamaForCausalLM"], "model_type": f"llava_{llm.get('model_type')}",
            "mm_vision_tower": meta["backbone"]["spec"], "mm_hidden_size": hosted.encoder.width,
            "mm_projector_type": projector, "mm_vision_select_layer": hosted.encoder.spec.layer,
            "mm_vision_select_feature": hosted.encoder.spec.select, "mm_use_im_start_end": False,
            "mm_use_im_patch_token": False, "image_aspect_ratio": "square", "tune_mm_mlp_adapter": meta["stage"] == 1,
            "utabench": {**meta, "num_image_tokens": hosted.num_image_tokens}}


def save_llava(hosted: HostedLlava, out_dir: Path, meta: Dict[str, Any]) -> None:
    """A stage-2 model in the original LLaVA layout (safetensors), written atomically as a folder."""

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v for k, v in hosted.model.model.language_model.state_dict().items()}
    if hosted.model.lm_head.weight is not hosted.model.get_input_embeddings().weight:  # tied: stored once
        state.update({f"lm_head.{k}": v for k, v in hosted.model.lm_head.state_dict().items()})
    state.update(projector_state(hosted.projector))
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    config = llava_config(hosted, meta)
    atomic_write(out_dir / "model.safetensors",
            lambda p: save_file(state, str(p), metadata={"format": "pt", "utabench": json.dumps(config["utabench"])}))
    hosted.tokenizer.save_pretrained(str(out_dir))
    atomic_write_json(out_dir / "config.json", config)
