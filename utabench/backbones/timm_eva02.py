"""EVA-02 backbones: EVA-02-CLIP through open_clip's EVA02-* configs, EVA-02 MIM encoders through timm's eva02_*.

The MIM encoders are image-only: they have no joint image-text space, so zero-shot tasks record them as not
applicable (the ‡ entries of the paper's Table 4).
"""

from __future__ import annotations

import copy
import importlib
from typing import Callable, List, Sequence

import open_clip
import timm
import torch

from utabench.backbones.base import Backbone, BackboneInfo, BackboneSpec, count_params, resolve_blocks
from utabench.backbones.openclip import ClipOptions, OpenClipBackbone
from utabench.backbones.trunk_eva import EvaTrunk
from utabench.core.checkpoint import load_strict, read_state_dict
from utabench.core.errors import UtabenchError
from utabench.core.fingerprint import file_sha256
from utabench.core.registry import BACKBONES
from utabench.core.schema import did_you_mean


class TimmImageBackbone(Backbone):
    """An image-only timm ViT (EVA-02 MIM checkpoints); weights go through timm's own checkpoint filter."""

    def __init__(self, spec: BackboneSpec, family: str):
        super().__init__()
        architecture = spec.model.split(".")[0]
        kwargs = {"num_classes": 0}
        if spec.options.get("image_size"):
            kwargs["img_size"] = int(spec.options["image_size"])
        self.trunk = timm.create_model(architecture, pretrained=False, **kwargs)
        if spec.checkpoint:
            filter_fn = getattr(importlib.import_module(type(self.trunk).__module__), "checkpoint_filter_fn", None)
            state = read_state_dict(spec.checkpoint)
            if filter_fn is not None:
                state = filter_fn(state, self.trunk)
            load_strict(self.trunk, state, spec.checkpoint)
        size = self.trunk.patch_embed.img_size  # the model's input size, which `image_size` may have changed
        self._transform = timm.data.create_transform(
            **timm.data.resolve_data_config({"input_size": (3, *size)}, model=self.trunk))
        self.info = BackboneInfo(
            family=family, model=spec.model, params=count_params(self.trunk),
            patch_size=self.trunk.patch_embed.patch_size[0], input_size=self.trunk.patch_embed.img_size[0],
            width=self.trunk.embed_dim, depth=len(self.trunk.blocks), embed_dim=None,
            num_prefix_tokens=self.trunk.num_prefix_tokens, has_text=False,
            weights=spec.checkpoint or f"random-init(seed={spec.options.get('seed', 0)})",
            weights_sha256=file_sha256(spec.checkpoint) if spec.checkpoint else None,
        )

    def image_transform(self) -> Callable:
        return self._transform

    def vision_tower(self) -> torch.nn.Module:
        return self.trunk

    def vision_trunk(self) -> EvaTrunk:
        return EvaTrunk(copy.deepcopy(self.trunk))

    def token_features(self, images: torch.Tensor, blocks: Sequence[int]) -> List[torch.Tensor]:
        out = self.trunk.forward_intermediates(
            images, indices=resolve_blocks(blocks, self.info.depth), output_fmt="NLC",
            intermediates_only=True, return_prefix_tokens=True,
        )
        return [torch.cat([prefix, x], dim=1) for x, prefix in out]


def check_eva02_model(model: str) -> None:
    """Refuse a name that is neither an open_clip config nor a timm model, naming the closest EVA ones."""
    if model in open_clip.list_models() or timm.is_model(model.split(".")[0]):
        return
    known = [m for m in open_clip.list_models() if "eva" in m.lower()] + timm.list_models("eva02*")
    raise UtabenchError(f"unknown EVA-02 model {model!r};{did_you_mean(model, known, n=5)} use an open_clip "
                        "EVA02-* config (EVA-02-CLIP) or a timm eva02_* model (MIM, image-only)")


@BACKBONES.register(
    "eva02",
    help="EVA-02: eva02:<open_clip EVA02-* config> (EVA-02-CLIP) or eva02:<timm eva02_* model> (MIM, image-only)",
    schema=ClipOptions, check=check_eva02_model,
)
def build_eva02(spec: BackboneSpec) -> Backbone:
    check_eva02_model(spec.model)
    if spec.model in open_clip.list_models():
        return OpenClipBackbone(spec, family="eva02")
    return TimmImageBackbone(spec, family="eva02")
