"""CLIP-family backbones through open_clip: OpenAI CLIP, OpenCLIP, DataComp, EVA-02-CLIP / EVA-01-CLIP configs.

Weights load as they are published, read safely and loaded strictly:
- OpenAI's `.pt` releases (TorchScript archives; their tensors are read without running the archive). Their
  towers use QuickGELU, which the model then uses too, whatever the config name says.
- open_clip hub files: `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`, or the downloaded hub folder
  itself, whose `open_clip_config.json` is checked against the named config (and says whether to use QuickGELU).
- BAAI's original EVA-02-CLIP / EVA-CLIP checkpoints (`EVA02_CLIP_B_psz16_s8B.pt`, ...): their `visual.*` keys go
  through timm's EVA checkpoint filter into open_clip's timm tower, their text keys under `text.`.
- any open_clip state dict (`model.state_dict()`).
Without a checkpoint the model is randomly initialised. Our own small configs (used by the embedded default) are
added to open_clip's registry.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import open_clip
import torch

from utabench.backbones.base import Backbone, BackboneInfo, BackboneSpec, ImageOptions, count_params, resolve_blocks
from utabench.backbones.trunk import Trunk
from utabench.backbones.trunk_clip import ClipTrunk
from utabench.backbones.trunk_eva import EvaTrunk
from utabench.core.checkpoint import is_torchscript, load_strict, read_state_dict
from utabench.core.errors import UtabenchError
from utabench.core.fingerprint import file_sha256
from utabench.core.logs import quiet
from utabench.core.registry import BACKBONES
from utabench.core.schema import did_you_mean

open_clip.add_model_config(Path(__file__).parent / "model_configs" / "open_clip")


class ClipOptions(ImageOptions):
    quick_gelu: Optional[bool] = None  # QuickGELU; default: as the checkpoint's release says, else the config


HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # 0-d tensors in OpenAI's archives
_TEXT_KEYS = ("positional_embedding", "text_projection", "token_embedding.", "transformer.", "ln_final.",
              "attn_mask")
_ARCHITECTURE = ("layers", "width", "heads", "patch_size", "timm_model_name")


def resolve_checkpoint(path: str) -> Tuple[Path, Optional[Dict[str, Any]]]:
    """The weights file of a checkpoint path (a file, or an open_clip hub folder) and the hub's open_clip_config.json
    beside it, if any."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = next((path / name for name in HUB_WEIGHTS if (path / name).is_file()), None)
        if found is None:
            raise UtabenchError(f"checkpoint folder {path} holds neither {' nor '.join(HUB_WEIGHTS)}; pass the weights "
                                "file or an open_clip hub folder")
        path = found
    config = path.parent / "open_clip_config.json"
    if path.name in HUB_WEIGHTS and config.is_file():
        try:
            return path, json.loads(config.read_text())
        except json.JSONDecodeError as exc:
            raise UtabenchError(f"{config} is not valid JSON ({exc.msg})") from None
    return path, None


def check_hub_config(hub: Dict[str, Any], model: str, source: Path) -> None:
    """The hub's model_cfg must describe the architecture of the named open_clip config."""
    ours, theirs = open_clip.get_model_config(model), hub.get("model_cfg") or {}
    differences = [f"embed_dim {theirs['embed_dim']} vs {ours['embed_dim']}"] if theirs.get(
        "embed_dim", ours["embed_dim"]) != ours["embed_dim"] else []
    for tower in ("vision_cfg", "text_cfg"):
        for key in _ARCHITECTURE:
            a, b = (theirs.get(tower) or {}).get(key), (ours.get(tower) or {}).get(key)
            if a is not None and b is not None and a != b:
                differences.append(f"{tower}.{key} {a} vs {b}")
    if differences:
        raise UtabenchError(f"{source.parent / 'open_clip_config.json'} describes another model than {model} "
                            f"({'; '.join(differences[:3])}); name the open_clip config the weights were trained with")


def _from_eva_clip(state: Dict[str, torch.Tensor], model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """BAAI's EVA-CLIP layout (`visual.blocks.N.mlp.w1`, `visual.rope.*`, text keys at the top or under `text.`) in
    open_clip's (`visual.trunk.*` through timm's EVA checkpoint filter, `text.*`)."""
    from timm.models.eva import checkpoint_filter_fn

    visual = checkpoint_filter_fn({k: v for k, v in state.items() if k.startswith("visual.")}, model.visual.trunk)
    out = {f"visual.trunk.{k}": v for k, v in visual.items()}
    for key, value in state.items():
        if key.startswith("visual."):
            continue
        if key == "text.logit_scale":
            key = "logit_scale"
        elif key.startswith(_TEXT_KEYS):
            key = f"text.{key}"
        out[key] = value
    return out


def load_open_clip_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Read a checkpoint without unpickling objects and load it strictly, the way open_clip converts it."""
    from open_clip.factory import convert_state_dict, resize_pos_embed, resize_text_pos_embed
    from open_clip.model import convert_to_custom_text_state_dict

    state = read_state_dict(path)
    for key in [k for k in state if k in _OPENAI_EXTRAS or k.endswith("attn_mask")]:
        del state[key]  # OpenAI's 0-d extras; causal masks (derived buffers, kept by TorchScript archives)
    if hasattr(model.visual, "trunk") and "visual.pos_embed" in state:
        state = _from_eva_clip(state, model)
    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and model.logit_scale.ndim != state["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    load_strict(model, state, path)


def check_clip_model(model: str) -> None:
    """Refuse a name that is not an open_clip model config, naming the closest ones."""
    known = open_clip.list_models()
    if model not in known:
        raise UtabenchError(f"unknown open_clip model config {model!r};{did_you_mean(model, known, n=5)} see the "
                            f"{len(known)} configs: python -c 'import open_clip; print(open_clip.list_models())'")


class OpenClipBackbone(Backbone):
    """An open_clip CLIP model: native ViT towers or timm-backed ones (EVA-02-CLIP)."""

    def __init__(self, spec: BackboneSpec, family: str):
        super().__init__()
        check_clip_model(spec.model)
        image_size = spec.options.get("image_size")
        weights, hub = resolve_checkpoint(spec.checkpoint) if spec.checkpoint else (None, None)
        if hub is not None:
            check_hub_config(hub, spec.model, weights)
        quick_gelu = spec.options.get("quick_gelu")
        if quick_gelu is None and weights is not None:  # OpenAI's releases, and hub configs that say so
            quick_gelu = is_torchscript(weights) or bool((hub or {}).get("model_cfg", {}).get("quick_gelu"))
        with quiet("", level=logging.ERROR):  # open_clip warns on every random init, which is what no checkpoint means
            self.model, _, self._preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=None, force_image_size=image_size, force_quick_gelu=bool(quick_gelu)
            )
        if weights is not None:
            # a timm tower is resized after its weights load (as open_clip does); a native one resizes them on load
            resize_after = image_size and hasattr(self.model.visual, "trunk")
            if resize_after:
                self.model.visual.set_input_size(open_clip.get_model_config(spec.model)["vision_cfg"]["image_size"])
            load_open_clip_weights(self.model, weights)
            if resize_after:
                self.model.visual.set_input_size(image_size)
        self._tokenizer = open_clip.get_tokenizer(spec.model)
        visual = self.model.visual
        if hasattr(visual, "trunk"):  # timm-backed tower
            trunk = visual.trunk
            patch, width, depth = trunk.patch_embed.patch_size[0], trunk.embed_dim, len(trunk.blocks)
            prefix = trunk.num_prefix_tokens
        elif hasattr(visual, "transformer"):
            patch, width, depth = visual.patch_size[0], visual.transformer.width, len(visual.transformer.resblocks)
            prefix = 1
        else:
            raise UtabenchError(f"open_clip model {spec.model} has no ViT image tower; utabench supports ViTs")
        self.info = BackboneInfo(
            family=family, model=spec.model, params=count_params(self.model), patch_size=patch,
            input_size=visual.image_size[0], width=width, depth=depth,
            embed_dim=int(open_clip.get_model_config(spec.model)["embed_dim"]),
            num_prefix_tokens=prefix, has_text=True,
            weights=spec.checkpoint or f"random-init(seed={spec.options.get('seed', 0)})",
            weights_sha256=file_sha256(weights) if weights is not None else None,
        )

    def image_transform(self) -> Callable:
        return self._preprocess

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def text_state(self) -> Dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("visual.")}

    def vision_tower(self) -> torch.nn.Module:
        visual = self.model.visual
        return visual.trunk if hasattr(visual, "trunk") else visual

    def vision_trunk(self) -> Trunk:
        tower = copy.deepcopy(self.vision_tower())
        return EvaTrunk(tower) if hasattr(self.model.visual, "trunk") else ClipTrunk(tower)

    def joint_tokens(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        if hasattr(visual, "trunk"):  # timm tower: trunk norm -> trunk head (if any) -> open_clip's head
            trunk = visual.trunk
            if getattr(trunk, "global_pool", None) != "token" or not isinstance(getattr(trunk, "fc_norm", None), torch.nn.Identity):
                return super().joint_tokens(images)
            return visual.head(trunk.head(trunk.forward_features(images)))
        if getattr(visual, "attn_pool", None) is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            return super().joint_tokens(images)  # the image embedding is not a projected token
        out = visual.forward_intermediates(images, indices=[self.info.depth - 1], intermediates_only=True,
                                           output_fmt="NLC", output_extra_tokens=True)
        tokens = torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
        tokens = visual.ln_post(tokens)
        return tokens @ visual.proj if visual.proj is not None else tokens

    def token_features(self, images: torch.Tensor, blocks: Sequence[int]) -> List[torch.Tensor]:
        out = self.model.visual.forward_intermediates(
            images, indices=resolve_blocks(blocks, self.info.depth), intermediates_only=True,
            output_fmt="NLC", output_extra_tokens=True,
        )
        return [torch.cat([p, x], dim=1) for p, x in zip(out["image_intermediates_prefix"], out["image_intermediates"])]


@BACKBONES.register("clip", help="open_clip CLIP models (OpenAI CLIP, OpenCLIP, DataComp): clip:<open_clip config>",
                    schema=ClipOptions, check=check_clip_model)
def build_clip(spec: BackboneSpec) -> Backbone:
    return OpenClipBackbone(spec, family="clip")
