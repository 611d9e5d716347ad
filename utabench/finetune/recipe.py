"""The fine-tuning recipe the shared trainer runs, built from timm's pieces: `create_transform` (RandAugment, random
erasing), `create_optimizer_v2` with layer-wise lr decay, `CosineLRScheduler` (linear warm-up, cosine to min_lr,
stepped per iteration: `training/schedule.py`), `ModelEmaV3`, `LabelSmoothingCrossEntropy`. The export holds the raw
and the EMA weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file
from timm.data import auto_augment, create_transform
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3

from utabench.core.io import atomic_write
from utabench.finetune.data import TrainImages
from utabench.finetune.model import Classifier
from utabench.training.schedule import warmup_cosine_steps


def posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize as it ran before Pillow 13: keeping 0 bits gives a black image (Pillow 13 refuses 0 bits,
    which `rand-...-inc1` draws at magnitude 10, and the loader dies)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def train_transform(recipe: Dict[str, Any], image_size: int, mean, std):
    augment = recipe["augment"]
    transform = create_transform(image_size, is_training=True, auto_augment=augment["auto_augment"],
                                 re_prob=augment["re_prob"], re_mode=augment["re_mode"], re_count=augment["re_count"],
                                 scale=tuple(augment["scale"]), hflip=augment["hflip"],
                                 color_jitter=augment["color_jitter"], interpolation=augment["interpolation"],
                                 mean=tuple(mean), std=tuple(std))
    for step in transform.transforms:
        for op in getattr(step, "ops", ()):  # RandAugment / AutoAugment
            if op.aug_fn is auto_augment.posterize:
                op.aug_fn = posterize
    return transform


def eval_transform(recipe: Dict[str, Any], image_size: int, mean, std):
    return create_transform(image_size, is_training=False, crop_pct=recipe["eval"]["crop_pct"],
                            interpolation=recipe["eval"]["interpolation"], mean=tuple(mean), std=tuple(std))


class FinetuneRecipe:
    def __init__(self, cfg: Dict[str, Any], backbone, samples: List[Tuple[Path, int]], num_classes: int):
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # the head's initial weights are part of the configuration
            torch.manual_seed(int(cfg["seed"]))
            self.module = Classifier(backbone, num_classes, cfg["drop_path"], cfg["head_init_scale"])
        mean, std = backbone.normalisation()
        self.dataset = TrainImages(samples, train_transform(cfg, backbone.info.input_size, mean, std), cfg["seed"])
        smoothing = float(cfg["label_smoothing"])
        self.criterion = LabelSmoothingCrossEntropy(smoothing) if smoothing else torch.nn.CrossEntropyLoss()
        self.ema = ModelEmaV3(self.module, decay=cfg["ema"], stochastic_rounding=False) if cfg["ema"] else None

    def build_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        optim = self.cfg["optim"]
        return create_optimizer_v2(module, "adamw", lr=float(optim["lr"]), weight_decay=float(optim["weight_decay"]),
                                   layer_decay=float(self.cfg["layer_decay"]), betas=tuple(optim["betas"]),
                                   eps=float(optim["eps"]))

    def build_scheduler(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
        return warmup_cosine_steps(optimizer, warmup_steps, total_steps, float(self.cfg["optim"]["min_lr"]),
                                   float(self.cfg["warmup_lr_init"]))

    def loss(self, model: torch.nn.Module, batch: Dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        logits = model(batch["image"].to(device, non_blocking=True))
        return self.criterion(logits.float(), batch["label"].to(device, non_blocking=True))

    def after_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.update(self.module, step=step)

    def extra_state(self) -> Dict[str, Any]:
        return {"ema": self.ema.state_dict() if self.ema is not None else None}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def export(self, out_dir: Path, steps: int) -> Dict[str, Any]:
        state = {f"raw.{k}": v.detach().contiguous() for k, v in self.module.state_dict().items()}
        if self.ema is not None:
            state.update({f"ema.{k}": v.detach().contiguous() for k, v in self.ema.module.state_dict().items()})
        path = Path(out_dir) / "finetuned.safetensors"
        atomic_write(path, lambda tmp: save_file(state, str(tmp)))
        return {"finetuned": str(path), "steps": steps}
