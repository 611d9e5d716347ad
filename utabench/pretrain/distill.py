"""The distillation recipe: a UTA student learns from a frozen teacher's joint-space tokens (UTA, MIM, FD, UTA+MIM).

The teacher is any registered backbone that gives `joint_tokens` (a CLIP image tower: final tokens after its norm
and projection, CLS included) on a token grid equal to the student's. Both see the same augmented crop, each
normalised with its own mean/std (and resized to the teacher's input size if that differs). The export is the UTA
release layout: the student's `visual.*` plus the teacher's text tower as `text.*`, so the result loads as
`uta:<student model>` and runs zero-shot with the teacher's text encoder, exactly like a release checkpoint.
With a `validation` block (pretrain/config.py) the held-out images leave `dataset` for `validation_set`, in fixed
views with fixed masks, and `validation_loss` scores the student on them for the trainer's validation points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file

from utabench.backbones.base import Backbone
from utabench.backbones.factory import build_backbone
from utabench.backbones.uta import build_text_tower
from utabench.backbones.uta_checkpoint import timm_to_release
from utabench.core.checkpoint import load_strict
from utabench.core.distributed import DistInfo
from utabench.core.errors import NotApplicable, UtabenchError
from utabench.core.io import atomic_write, atomic_write_text
from utabench.pretrain.data import FixedViews, PretrainImages, index_source, split_holdout
from utabench.pretrain.masking import MaskGenerator, MaskSpec
from utabench.pretrain.objectives import OBJECTIVES
from utabench.pretrain.recipes import RECIPES
from utabench.pretrain.student import Student
from utabench.pretrain.teacher_cache import TeacherTokenCache, cache_key


def release_text_state(teacher: Backbone) -> Dict[str, torch.Tensor]:
    """The teacher's text tower under open_clip TextTransformer names (the `text.*` part of a release file)."""
    try:
        state = teacher.text_state()
    except NotApplicable:
        return {}
    out = {}
    for key, value in state.items():
        if key in ("logit_scale", "logit_bias"):
            continue
        out[key[len("text."):] if key.startswith("text.") else key] = value
    return out


class _Normalize(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@RECIPES.register("distill", help="a student from a frozen teacher's joint-space tokens (uta, mim, fd, uta+mim)")
class DistillRecipe:
    need_captions = False

    def __init__(self, cfg: Dict[str, Any], device: str = "cpu", dist=None, teacher: Backbone | None = None):
        self.cfg, self.device, self.dist = cfg, device, dist or DistInfo()
        self.objective = OBJECTIVES.get(cfg["objective"])
        student_cfg = cfg["student"]
        with torch.random.fork_rng(devices=[]):  # the config's seed alone decides the initial weights
            torch.manual_seed(int(cfg["seed"]))
            self.module = Student(str(student_cfg["model"]), self.objective, float(student_cfg.get("drop_path", 0.0)),
                                  bool(student_cfg.get("grad_checkpointing", False)), student_cfg.get("pos_embed"))
        self.image_size = int(self.module.visual.patch_embed.img_size[0])
        self.teacher = (teacher or build_backbone(cfg["teacher"])).to(device)
        self.teacher_size = int(self.teacher.info.input_size)
        self.student_norm = _Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD).to(device)  # the `uta` transform's
        self.teacher_norm = _Normalize(*self.teacher.normalisation()).to(device)
        self._check_teacher(device)
        self.text_state = release_text_state(self.teacher)
        self._check_text()
        self.masks = MaskGenerator(self.module.grid, MaskSpec(**cfg["mask"])) if self.objective.uses_mask else None
        records, held = index_source(cfg["data"]), []
        validation = cfg.get("validation")
        if validation:  # its held-out images leave the training set
            records, held = split_holdout(records, int(validation["holdout"]), int(cfg["seed"]))
        self.dataset = PretrainImages.from_config(cfg["data"], self.image_size, int(cfg["seed"]), mask_fn=self.masks,
                                                  records=records)
        self.validation_set: FixedViews | None = None
        if validation:
            masks = None
            if self.objective.uses_mask:
                masks = MaskGenerator(self.module.grid, MaskSpec(**validation["mask"]))
            self.validation_set = FixedViews(PretrainImages.from_config(cfg["data"], self.image_size, int(cfg["seed"]),
                                                                        mask_fn=masks, records=held))
        self.cache: TeacherTokenCache | None = None

    def use_teacher_cache(self, root: Path) -> None:
        """Keep the teacher's tokens per epoch under `root`/<key> and read them when there (`teacher_cache: true`)."""
        optim = self.cfg["optim"]
        layout = {"batch": optim["batch_size"], "processes": self.dist.world_size, "accumulation": optim["grad_accum"],
                  "precision": self.cfg["precision"], "device": torch.device(self.device).type}
        sizes = {"student": self.image_size, "teacher": self.teacher_size}
        key = cache_key(self.cfg, [r.source for r in self.dataset.records], sizes, layout)
        per_epoch = len(self.dataset) // optim["batch_size"] * optim["batch_size"] // self.dist.world_size
        self.cache = TeacherTokenCache(Path(root) / key, per_epoch, self.dist.rank)

    def _check_teacher(self, device: str) -> None:
        key, config = self.teacher.spec.key, self.module.config
        probe = torch.zeros(1, 3, self.teacher_size, self.teacher_size, device=device)
        try:
            with torch.no_grad():
                tokens = self.teacher.joint_tokens(probe)
        except NotApplicable as exc:
            raise UtabenchError(f"teacher {key} cannot teach: {exc}; use a CLIP image tower (clip:/eva02: open_clip "
                                "configs) or a uta backbone") from None
        grid = self.module.grid
        if tokens.shape[1] != 1 + grid[0] * grid[1]:
            raise UtabenchError(f"teacher {key} gives {tokens.shape[1] - 1} patch tokens at {self.teacher_size}px; "
                                f"the student's grid is {grid[0]}x{grid[1]}: pick a student config with the "
                                "teacher's token grid")
        if tokens.shape[-1] != config["embed_dim"]:
            raise UtabenchError(f"teacher {key}'s joint space is {tokens.shape[-1]}-d but student "
                                f"{self.module.model_name} projects to {config['embed_dim']}-d (its embed_dim)")

    def _check_text(self) -> None:
        """The teacher's text tower must fit the student config's `text` section, or the export would not load."""
        if not self.text_state:
            return
        tower = build_text_tower(self.module.config)
        try:
            load_strict(tower, self.text_state, f"teacher {self.teacher.spec.key}'s text tower")
        except UtabenchError as exc:
            raise UtabenchError(f"student config {self.module.model_name}: its `text` section does not match the "
                                f"teacher's text tower ({exc})") from None

    @torch.no_grad()
    def teacher_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's joint-space tokens for a batch of student-size crops in [0, 1]."""
        if self.teacher_size != self.image_size:
            images = F.interpolate(images, size=self.teacher_size, mode="bicubic", align_corners=False)
        return self.teacher.joint_tokens(self.teacher_norm(images))

    def _targets(self, images: torch.Tensor, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's tokens for the batch: from the token cache when it holds them, else computed (and kept)."""
        if self.cache is None:
            return self.teacher_tokens(images)
        epoch, index = int(batch["epoch"][0]), batch["index"]
        stored = self.cache.get(epoch, index)
        if stored is not None:
            return stored.to(images.device, non_blocking=True)
        tokens = self.teacher_tokens(images)
        self.cache.put(epoch, index, tokens)
        return tokens

    def loss(self, model: torch.nn.Module, batch: Dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        images = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True) if "mask" in batch else None
        return self._loss(model, images, mask, self._targets(images, batch).float())

    def validation_loss(self, model: torch.nn.Module, batch: Dict[str, torch.Tensor],
                        device: torch.device) -> Tuple[torch.Tensor, int]:
        """(the objective's loss, images) on a batch of `validation_set`: the teacher's tokens are computed, never
        read from or kept in the token cache. The loss is a mean over tokens, and every image has the same number
        of scored tokens, so weighting it by the images gives the mean per image."""
        images = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True) if "mask" in batch else None
        return self._loss(model, images, mask, self.teacher_tokens(images).float()), int(images.shape[0])

    def _loss(self, model: torch.nn.Module, images: torch.Tensor, mask: torch.Tensor | None,
              target: torch.Tensor) -> torch.Tensor:
        x = self.student_norm(images)
        keep = None
        if self.objective.student_input == "kept":
            keep = (~mask).nonzero()[:, 1].view(mask.shape[0], -1)
            pred = model(x, keep=keep)
        elif self.objective.needs_mask_token:
            pred = model(x, mask=mask)
        else:
            pred = model(x)
        return self.objective.loss(pred, target, keep, mask)

    def export(self, out_dir: Path, steps: int) -> Dict[str, Any]:

        logit_scale = None
        scale = self.teacher.text_state().get("logit_scale") if self.text_state else None
        if scale is not None:
            logit_scale = float(scale)
        state = timm_to_release(self.module.visual, self.text_state, self.module.config["vision"]["pt_seq_len"],
                                logit_scale)
        path = Path(out_dir) / "final.safetensors"
        meta = {"utabench": json.dumps({"objective": self.objective.name, "steps": steps})}
        state = {k: v.contiguous() for k, v in state.items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
        model = self.module.model_name
        if not self.module.config["vision"].get("rope", True):  # trained without RoPE: so is every use of it
            model = str(Path(out_dir) / "model.json")
            atomic_write_text(model, json.dumps(self.module.config, indent=1))
        entry = {"spec": f"uta:{model}", "checkpoint": str(path)}
        if not self.text_state:  # an image-only teacher's student pairs with a text tower given separately
            entry["text"] = None
        return {"backbone": entry, "objective": self.objective.name, "teacher": self.teacher.spec.to_dict(),
                "flops": getattr(self, "flops", None)}
