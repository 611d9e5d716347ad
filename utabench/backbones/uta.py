"""UTA: the EVA-02-architecture ViT of the UTA paper on timm's `Eva`, with a CLIP text tower for zero-shot.

Architecture facts: pre-LN ViT with absolute position embeddings, 2D RoPE on q/k of the patch tokens, separate q/k/v
projections with q and v biases, SwiGLU FFN with a sub-LayerNorm, no attention inner LayerNorm, CLS -> norm -> head
into the teacher's joint space. Configs are JSON files in `model_configs/uta/` (or a path to one).

The text tower for zero-shot is the one stored in the same checkpoint (`text.*`, option `text: checkpoint`, the
default) or a named CLIP teacher's (option `text: {spec: clip:..., checkpoint: ...}`).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Union

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIPTextCfg, _build_text_tower
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transform import image_transform
from pydantic import field_validator
from timm.models.eva import Eva

from utabench.backbones.base import Backbone, BackboneInfo, BackboneSpec, ImageOptions, count_params, resolve_blocks
from utabench.backbones.factory import build_backbone, parse_backbone_spec
from utabench.backbones.trunk_eva import EvaTrunk
from utabench.backbones.uta_checkpoint import check_rope_tables, release_to_timm
from utabench.core.checkpoint import load_strict, read_state_dict
from utabench.core.errors import UtabenchError
from utabench.core.fingerprint import file_sha256
from utabench.core.registry import BACKBONES
from utabench.core.schema import did_you_mean

CONFIG_DIR = Path(__file__).parent / "model_configs" / "uta"


class UtaOptions(ImageOptions):
    """`text`: `checkpoint` (the text tower stored beside the image tower), a CLIP backbone entry whose text tower
    to use, or null (image tower only)."""

    text: Union[Literal["checkpoint"], None, Dict[str, Any], str] = "checkpoint"

    @field_validator("text")
    @classmethod
    def _text_tower(cls, value):
        if value is None or value == "checkpoint":
            return value

        parse_backbone_spec(value, where="option text")  # a text tower's entry is checked like any backbone's
        return value


def uta_config_names() -> List[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _config_path(model: str) -> Path:
    path = Path(model).expanduser() if model.endswith(".json") else CONFIG_DIR / f"{model}.json"
    if not path.is_file():
        raise UtabenchError(f"unknown UTA config {model!r};{did_you_mean(model, uta_config_names(), n=5)} known: "
                            f"{', '.join(uta_config_names())} (or the path of a .json config)")
    return path


def load_uta_config(model: str) -> Dict[str, Any]:
    path = _config_path(model)
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UtabenchError(f"UTA config {path} is not valid JSON ({exc}); see {CONFIG_DIR} for the format") from None
    if not isinstance(cfg, dict):
        raise UtabenchError(f"UTA config {path} holds a {type(cfg).__name__}, expected a JSON object")
    return cfg


def check_uta_model(model: str) -> None:
    load_uta_config(model)


def build_uta_vision(vision: Dict[str, Any], embed_dim: int, image_size: Optional[int] = None,
                     drop_path_rate: float = 0.0, absolute_pos: bool = True) -> Eva:
    """The config's vision tower; `vision.rope: false` builds it without RoPE (a positional-embedding ablation's
    student, exported with such a config), `absolute_pos=False` without the learned absolute embedding."""
    size = int(image_size or vision["image_size"])
    return Eva(
        img_size=size, patch_size=vision["patch_size"], embed_dim=vision["width"], depth=vision["depth"],
        num_heads=vision["heads"],
        # timm sizes the FFN as int(width * mlp_ratio); the half keeps float rounding from losing a unit
        mlp_ratio=(vision["mlp_hidden"] + 0.5) / vision["width"],
        qkv_fused=False, qkv_bias=True, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=False,
        use_abs_pos_emb=absolute_pos, use_rot_pos_emb=bool(vision.get("rope", True)),
        ref_feat_shape=(vision["pt_seq_len"], vision["pt_seq_len"]),
        num_classes=embed_dim, global_pool="token", drop_path_rate=drop_path_rate,
    )


def build_text_tower(cfg: Dict[str, Any]) -> torch.nn.Module:
    """The config's CLIP text tower (`quick_gelu: true` for OpenAI CLIP teachers' towers)."""
    return _build_text_tower(cfg["embed_dim"], CLIPTextCfg(**cfg["text"]), quick_gelu=bool(cfg.get("quick_gelu")))


class UtaBackbone(Backbone):
    def __init__(self, spec: BackboneSpec):
        super().__init__()
        cfg = load_uta_config(spec.model)
        self.config = cfg
        vision = cfg["vision"]
        self.visual = build_uta_vision(vision, cfg["embed_dim"], spec.options.get("image_size"))
        text_choice = spec.options.get("text", "checkpoint")
        self.text: Optional[torch.nn.Module] = None
        self.teacher: Optional[Backbone] = None
        self._logit_scale: Optional[float] = None  # the checkpoint's (log) logit scale, stored beside the text tower
        if spec.checkpoint:
            state = read_state_dict(spec.checkpoint)
            if "logit_scale" in state:
                self._logit_scale = float(state["logit_scale"])
            visual_state, text_state, rope = release_to_timm(state, spec.checkpoint)
            check_rope_tables(rope, vision["width"] // vision["heads"], self.visual.patch_embed.grid_size[0],
                              vision["pt_seq_len"], spec.checkpoint)
            load_strict(self.visual, visual_state, spec.checkpoint)
            if text_state and text_choice == "checkpoint":
                self.text = build_text_tower(cfg)
                load_strict(self.text, text_state, spec.checkpoint)
        elif text_choice == "checkpoint":
            self.text = build_text_tower(cfg)  # random init, seeded by the factory
        if isinstance(text_choice, (dict, str)) and text_choice != "checkpoint":

            self.teacher = build_backbone(text_choice)
            if self.teacher.info.embed_dim != cfg["embed_dim"] or not self.teacher.info.has_text:
                raise UtabenchError(
                    f"text tower {self.teacher.spec.key} gives {self.teacher.info.embed_dim}-d text embeddings; "
                    f"UTA {spec.model} projects images to {cfg['embed_dim']}-d: pair it with its own teacher"
                )
        self._tokenizer = SimpleTokenizer(context_length=cfg["text"]["context_length"]) if self.text else None
        self._transform = image_transform(
            self.visual.patch_embed.img_size[0], is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD,
            interpolation="bicubic", resize_mode="shortest",
        )
        has_text = self.text is not None or self.teacher is not None
        self.info = BackboneInfo(
            family="uta", model=spec.model, params=count_params(self.visual, *( [self.text] if self.text else [])),
            patch_size=vision["patch_size"], input_size=self.visual.patch_embed.img_size[0],
            width=vision["width"], depth=vision["depth"], embed_dim=cfg["embed_dim"], num_prefix_tokens=1,
            has_text=has_text,
            weights=spec.checkpoint or f"random-init(seed={spec.options.get('seed', 0)})",
            weights_sha256=file_sha256(spec.checkpoint) if spec.checkpoint else None,
        )

    def image_transform(self) -> Callable:
        return self._transform

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def joint_tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual.head(self.visual.forward_features(images))

    def vision_tower(self) -> torch.nn.Module:
        return self.visual

    def vision_trunk(self) -> EvaTrunk:
        return EvaTrunk(copy.deepcopy(self.visual))

    def temperature(self) -> Optional[float]:
        """The contrastive temperature its text tower was trained at (1 / exp(logit_scale)), if the checkpoint (or the
        CLIP whose text tower it uses) stores one."""
        scale = self._logit_scale
        if self.teacher is not None:
            stored = self.teacher.text_state().get("logit_scale")
            scale = float(stored) if stored is not None else None
        return None if scale is None else 1.0 / math.exp(scale)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if self.teacher is not None:
            return self.teacher.tokenize(texts)
        if self._tokenizer is None:
            return super().tokenize(texts)
        return self._tokenizer(list(texts))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.teacher is not None:
            return self.teacher.encode_text(tokens)
        if self.text is None:
            return super().encode_text(tokens)
        return self.text(tokens)

    def text_state(self) -> Dict[str, torch.Tensor]:
        if self.teacher is not None:
            return self.teacher.text_state()
        if self.text is None:
            return super().text_state()
        return self.text.state_dict()

    def token_features(self, images: torch.Tensor, blocks: Sequence[int]) -> List[torch.Tensor]:
        out = self.visual.forward_intermediates(
            images, indices=resolve_blocks(blocks, self.info.depth), output_fmt="NLC",
            intermediates_only=True, return_prefix_tokens=True,
        )
        return [torch.cat([prefix, x], dim=1) for x, prefix in out]


@BACKBONES.register("uta", schema=UtaOptions, check=check_uta_model,
                    help=f"UTA ViT on timm's Eva: uta:<config> ({', '.join(uta_config_names())}) or uta:<path.json>")
def build_uta(spec: BackboneSpec) -> Backbone:
    return UtaBackbone(spec)
