"""Contrastive fine-tuning (objective `clip-ft`, paper A.1): a pretrained UTA student and the CLIP text tower it
carries (its teacher's) trained together on image-caption pairs, the step between the image-only student and the
released `†` models. The same recipe fine-tunes a CLIP itself (`init` a `clip:` entry, or `{pretrain:
world-clip.yaml}`): paper A.4's comparison with the teacher, fine-tuned for the samples UTA's pre-training and
fine-tuning saw, optionally on the kept tokens of a reversed block-wise mask (`contrastive.mask`, FLIP-style:
`kept_tokens.py`; the evaluation sees every patch).

Paper A.1 and where it is silent:
- both towers start from the pretrained ones and both are trained ("we initialize the vision and text encoders with
  the pre-trained ViT model and CLIP text encoder", as EVA-CLIP, whose recipe A.1 follows); `contrastive.lock_text`
  freezes the text tower instead;
- open_clip's `ClipLoss` (gathered across ranks with gradients under torchrun) with the temperature fixed at 0.01
  (logit scale 100, not learned), the paper's reason being that the towers start aligned: the temperature stays
  where the teacher's training left it, and CLIPs trained at scale end at open_clip's clamp of the logit scale, 100
  (UNVERIFIED for EVA-01-CLIP-g/14+: no weights here). `temperature: init` fixes it at the one the student's text
  tower was trained at (the logit scale its checkpoint stores): the same reasoning for a teacher that learned
  another temperature (the embedded world's teacher learns 0.088);
- LAMB (timm's), peak lr 2e-4 (B) / 4e-4 (L), weight decay 0.05, cosine to 0; layer-wise lr decay 0.75 (B) / 0.85
  (L) over each tower's own depth (embeddings, blocks, then the final norm and projection at scale 1), as EVA-CLIP
  applies its visual and text decay rates separately; timm's rule for what is not decayed (1-d parameters, the
  towers' `no_weight_decay`);
- `contrastive.patch_size` converts the student's patch size before training (B: 14 -> 16 "to be comparable with
  other methods"): the patch kernel is resized bicubically and the position grid resized to cover the same image
  (the dense tasks' conversion); RoPE follows the grid from the config.

The export of a UTA student is the UTA release layout (`visual.*` + `text.*`), so the result loads as `uta:<config>`
and runs every task; a CLIP's is an open_clip state dict (its logit scale the fixed temperature's) that loads as the
`clip:` model it started from, with the same options (QuickGELU as the source had it, its input size).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIPTextCfg, _build_text_tower
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from timm.optim import create_optimizer_v2
from timm.optim._param_groups import param_groups_layer_decay
from torch import nn

from utabench.backbones.base import Backbone
from utabench.backbones.factory import build_backbone
from utabench.backbones.layer_map import group_matcher
from utabench.backbones.patch_geometry import resize_grid, resize_patch_kernel
from utabench.backbones.uta import build_text_tower, build_uta_vision, load_uta_config, uta_config_names
from utabench.backbones.uta_checkpoint import timm_to_release
from utabench.core.checkpoint import load_strict
from utabench.core.distributed import DistInfo
from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write, atomic_write_json
from utabench.pretrain.data import PretrainImages
from utabench.pretrain.distill import _Normalize, release_text_state
from utabench.pretrain.kept_tokens import check_kept_tower, kept_image_features
from utabench.pretrain.masking import MaskGenerator, MaskSpec
from utabench.pretrain.recipes import RECIPES
from utabench.pretrain.tokens import MemoTokenizer
from utabench.training.schedule import warmup_cosine_steps


class _Layered(nn.Module):
    """One tower with the layer map timm's layer decay reads: embeddings 0, block i -> i + 1, the rest last."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def group_matcher(self, coarse: bool = False) -> Dict:
        return group_matcher("tower.")

    def no_weight_decay(self) -> List[str]:
        own = self.tower.no_weight_decay() if hasattr(self.tower, "no_weight_decay") else ()
        return [f"tower.{name}" for name in own]


class ContrastiveModel(nn.Module):
    def __init__(self, visual: nn.Module, text: nn.Module, temperature: float):
        super().__init__()
        self.visual, self.text = visual, text
        self.register_buffer("logit_scale", torch.tensor(1.0 / temperature), persistent=False)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                keep: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """`keep` (B, K): the patch indices that enter the image tower (with CLS); None: every patch."""
        image = self.visual(images) if keep is None else kept_image_features(self.visual, images, keep)
        return F.normalize(image, dim=-1), F.normalize(self.text(tokens), dim=-1)


def convert_patch_size(visual: nn.Module, vision_cfg: Dict[str, Any], embed_dim: int, patch_size: int) -> nn.Module:
    """A new UTA tower with `patch_size`, its kernel resized from `visual`'s and its position grid resized to cover
    the same image; everything else copied."""
    old = int(vision_cfg["patch_size"])
    image = int(vision_cfg["image_size"])
    if image % patch_size:
        raise UtabenchError(f"contrastive.patch_size {patch_size} does not divide the {image} px input")
    out = build_uta_vision({**vision_cfg, "patch_size": patch_size}, embed_dim)
    state = dict(visual.state_dict())
    state["patch_embed.proj.weight"] = resize_patch_kernel(state["patch_embed.proj.weight"], patch_size)
    pos = state["pos_embed"]  # (1, 1 + g * g, C), CLS first
    grid, new = image // old, image // patch_size
    patches = resize_grid(pos[:, 1:].reshape(1, grid, grid, -1), (new, new)).reshape(1, new * new, -1)
    state["pos_embed"] = torch.cat([pos[:, :1], patches], dim=1)
    load_strict(out, state, f"the patch-{old} student converted to patch {patch_size}")
    return out


def _config_name(config: Dict[str, Any], out_dir: Path) -> str:
    """A bundled UTA config equal to `config` (ignoring `about`), else one written beside the export."""
    strip = {k: v for k, v in config.items() if k != "about"}
    for name in uta_config_names():
        if {k: v for k, v in load_uta_config(name).items() if k != "about"} == strip:
            return name
    path = Path(out_dir) / "uta-config.json"
    atomic_write_json(path, config, indent=1)
    return str(path)


@RECIPES.register("contrastive-ft", help="a UTA student and its CLIP text tower (or a CLIP itself) fine-tuned on "
                  "image-caption pairs (paper A.1, A.4)")
class ContrastiveFinetuneRecipe:
    need_captions = True

    def __init__(self, cfg: Dict[str, Any], device: str = "cpu", dist: DistInfo = DistInfo(),
                 init: Backbone | None = None):
        self.cfg, self.settings = cfg, cfg["contrastive"]
        init = init or build_backbone(cfg["init"])
        if init.spec.family not in ("uta", "clip"):
            raise UtabenchError(f"contrastive fine-tuning starts from a uta backbone (a UTA student or release) or a "
                                f"clip model (paper A.4: the teacher itself), not {init.spec.key}")
        text_state = release_text_state(init)
        if not text_state:
            raise UtabenchError(f"{init.spec.key} carries no text tower to fine-tune: give its entry `text: {{spec: "
                                "clip:..., checkpoint: ...}` (the teacher whose text tower it was aligned to)")
        self.clip = init.spec.family == "clip"
        visual, text = self._clip_towers(init, text_state) if self.clip else self._uta_towers(init, text_state)
        text.requires_grad_(not self.settings["lock_text"])
        self.temperature = self._temperature(init)
        self.module = ContrastiveModel(visual, text, self.temperature)
        self.init_key = init.spec.key
        if self.clip:
            self.tokenizer = MemoTokenizer(open_clip.get_tokenizer(init.spec.model))
            self.norm = _Normalize(*init.normalisation()).to(device)
            size, grid = int(visual.image_size[0]), tuple(visual.grid_size)
        else:
            self.tokenizer = MemoTokenizer(SimpleTokenizer(context_length=self.config["text"]["context_length"]))
            self.norm = _Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD).to(device)  # the `uta` transform's
            size, grid = int(self.config["vision"]["image_size"]), tuple(visual.patch_embed.grid_size)
        self.loss_fn = open_clip.ClipLoss(gather_with_grad=True, rank=dist.rank, world_size=dist.world_size)
        self.masks = None
        if self.settings["mask"]:
            check_kept_tower(visual, f"contrastive.mask on {init.spec.key}")
            self.masks = MaskGenerator(grid, MaskSpec(**cfg["mask"]))
        self.dataset = PretrainImages.from_config(cfg["data"], size, int(cfg["seed"]), need_captions=True,
                                                  mask_fn=self.masks)

    def _uta_towers(self, init: Backbone, text_state: Dict[str, torch.Tensor]) -> Tuple[nn.Module, nn.Module]:
        """A UTA student's image tower (its patch size converted if asked) and the text tower it carries."""
        self.config = load_uta_config(init.spec.model)
        visual = init.vision_tower()
        patch = self.settings["patch_size"]
        if patch and patch != self.config["vision"]["patch_size"]:
            visual = convert_patch_size(visual, self.config["vision"], self.config["embed_dim"], int(patch))
            self.config = {**self.config, "vision": {**self.config["vision"], "patch_size": int(patch)},
                           "about": f"{init.spec.model} converted to patch {patch} for contrastive fine-tuning"}
        else:
            visual = build_uta_vision(self.config["vision"], self.config["embed_dim"])
            load_strict(visual, init.vision_tower().state_dict(), f"{init.spec.key}'s image tower")
        text = build_text_tower(self.config)
        load_strict(text, text_state, f"{init.spec.key}'s text tower")
        return visual, text

    def _clip_towers(self, init: Backbone, text_state: Dict[str, torch.Tensor]) -> Tuple[nn.Module, nn.Module]:
        """A CLIP's own image tower (a trainable copy) and its text tower as an open_clip TextTransformer (the same
        tensors under the same names); the export options that load the result as the same model."""
        if self.settings["patch_size"]:
            raise UtabenchError(f"contrastive.patch_size converts a uta student's patch size; {init.spec.key} is "
                                "fine-tuned at its own")
        visual = init.vision_tower()
        if hasattr(init.model.visual, "trunk"):
            raise UtabenchError(f"contrastive fine-tuning of a clip model needs open_clip's own ViT tower, not the "
                                f"timm tower of {init.spec.key}")
        quick_gelu = any(isinstance(m, QuickGELU) for m in visual.modules())
        config = open_clip.get_model_config(init.spec.model)
        text = _build_text_tower(int(config["embed_dim"]), CLIPTextCfg(**config["text_cfg"]), quick_gelu=quick_gelu)
        load_strict(text, text_state, f"{init.spec.key}'s text tower")
        self.clip_entry = {"spec": f"clip:{init.spec.model}", "quick_gelu": quick_gelu,
                           **({"image_size": init.spec.options["image_size"]}
                              if init.spec.options.get("image_size") else {})}
        return copy.deepcopy(visual).requires_grad_(True), text

    def _temperature(self, init: Backbone) -> float:
        if self.settings["temperature"] != "init":
            return float(self.settings["temperature"])
        if self.clip:
            scale = init.text_state().get("logit_scale")
            learned = None if scale is None else 1.0 / math.exp(float(scale))
        else:
            learned = init.temperature()
        if learned is None:
            raise UtabenchError(f"contrastive.temperature: init, but {init.spec.key} stores no logit_scale beside its "
                                "text tower; give the temperature as a number (the paper's: 0.01)")
        return learned

    def param_groups(self, module: ContrastiveModel):
        weight_decay = float(self.cfg["optim"]["weight_decay"])
        text_decay = self.settings["text_layer_decay"] or self.settings["layer_decay"]
        towers = [(_Layered(module.visual), self.settings["layer_decay"])]
        if not self.settings["lock_text"]:
            towers.append((_Layered(module.text), text_decay))
        groups = []
        for tower, decay in towers:
            groups += param_groups_layer_decay(tower, weight_decay, tower.no_weight_decay(), layer_decay=decay)
        return groups

    def build_optimizer(self, module: ContrastiveModel) -> torch.optim.Optimizer:
        optim = self.cfg["optim"]
        return create_optimizer_v2(self.param_groups(module), "lamb", lr=float(optim["lr"]),
                                   weight_decay=float(optim["weight_decay"]), betas=tuple(optim["betas"]),
                                   eps=float(optim["eps"]))

    def build_scheduler(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
        optim = self.cfg["optim"]
        return warmup_cosine_steps(optimizer, warmup_steps, total_steps, float(optim["min_lr"]), 0.0)

    def loss(self, model: nn.Module, batch: Dict[str, Any], device: torch.device) -> torch.Tensor:
        images = self.norm(batch["image"].to(device, non_blocking=True))
        tokens = self.tokenizer(batch["caption"]).to(device, non_blocking=True)
        keep = None
        if self.masks is not None:  # every mask keeps as many patches: one (B, K) index
            mask = batch["mask"].to(device, non_blocking=True)
            keep = (~mask).nonzero()[:, 1].view(mask.shape[0], -1)
        image_features, text_features = model(images, tokens, keep)
        return self.loss_fn(image_features.float(), text_features.float(), self.module.logit_scale)

    def export(self, out_dir: Path, steps: int) -> Dict[str, Any]:

        path = Path(out_dir) / "final.safetensors"
        logit_scale = math.log(1.0 / self.temperature)
        if self.clip:  # open_clip's own layout: visual.*, the text tensors at the top, logit_scale
            state = {f"visual.{k}": v for k, v in self.module.visual.state_dict().items()}
            state.update(self.module.text.state_dict())
            state["logit_scale"] = torch.tensor(logit_scale)
            entry = dict(self.clip_entry)
        else:
            name = _config_name(self.config, Path(out_dir))
            state = timm_to_release(self.module.visual, self.module.text.state_dict(),
                                    self.config["vision"]["pt_seq_len"], logit_scale)
            entry = {"spec": f"uta:{name}"}
        meta = {"utabench": json.dumps({"objective": "clip-ft", "steps": steps})}
        state = {k: v.detach().contiguous() for k, v in state.items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
        return {"backbone": {**entry, "checkpoint": str(path)}, "objective": "clip-ft", "init": self.init_key,
                "temperature": self.temperature, "masked": self.masks is not None}
