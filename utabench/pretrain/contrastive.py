"""The image-text contrastive recipe (objective `clip`): trains an open_clip model on image-caption pairs.

It makes the CLIP teachers of the embedded reproduction (and works for any open_clip config on webdataset shards of
jpg + txt pairs). The loss is open_clip's `ClipLoss` (gathered across ranks with gradients under torchrun); the
export is an open_clip state dict that loads as `clip:<model>`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file

import utabench.backbones.openclip  # noqa: F401  (adds utabench's open_clip model configs)
from utabench.core.distributed import DistInfo
from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write
from utabench.core.logs import quiet
from utabench.pretrain.data import PretrainImages
from utabench.pretrain.distill import _Normalize
from utabench.pretrain.recipes import RECIPES
from utabench.pretrain.tokens import MemoTokenizer


@RECIPES.register("contrastive", help="an open_clip model trained on image-caption pairs (the world's CLIP teacher)")
class ContrastiveRecipe:
    need_captions = True

    def __init__(self, cfg: Dict[str, Any], device: str = "cpu", dist: DistInfo = DistInfo()):
        rank, world_size = dist.rank, dist.world_size
        model = str(cfg["model"])
        if model not in open_clip.list_models():
            raise UtabenchError(f"unknown open_clip model config {model!r} for objective clip")
        with torch.random.fork_rng(devices=[]), quiet("", level=logging.ERROR):  # no "random init" warning: that is the point
            torch.manual_seed(int(cfg["seed"]))
            self.module = open_clip.create_model(model, pretrained=None)
        self.model_name = model
        self.tokenizer = MemoTokenizer(open_clip.get_tokenizer(model))
        mean = getattr(self.module.visual, "image_mean", None) or OPENAI_DATASET_MEAN
        std = getattr(self.module.visual, "image_std", None) or OPENAI_DATASET_STD
        self.norm = _Normalize(mean, std).to(device)
        self.loss_fn = open_clip.ClipLoss(gather_with_grad=True, rank=rank, world_size=world_size)
        self.dataset = PretrainImages.from_config(cfg["data"], self.module.visual.image_size[0], int(cfg["seed"]),
                                                  need_captions=True)

    def loss(self, model: torch.nn.Module, batch: Dict[str, Any], device: torch.device) -> torch.Tensor:
        images = self.norm(batch["image"].to(device, non_blocking=True))
        texts = self.tokenizer(batch["caption"]).to(device, non_blocking=True)
        image_features, text_features, logit_scale = model(images, texts)[:3]
        return self.loss_fn(image_features.float(), text_features.float(), logit_scale.float())

    def export(self, out_dir: Path, steps: int) -> Dict[str, Any]:

        path = Path(out_dir) / "final.safetensors"
        state = {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}
        meta = {"utabench": json.dumps({"objective": "clip", "steps": steps})}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
        return {"backbone": {"spec": f"clip:{self.model_name}", "checkpoint": str(path)}, "objective": "clip"}
