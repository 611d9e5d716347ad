"""A registered backbone as LLaVA's frozen vision tower.

It gives the per-token features of one block (LLaVA's `mm_vision_select_layer`, default the second to last) with
the prefix (CLS) tokens dropped (`patch`, LLaVA's default) or kept (`cls_patch`), in the output form transformers'
`LlavaModel.get_image_features` reads (`hidden_states[-1]`, select strategy `full`). It never trains: it stays in
eval mode, its parameters need no gradient and it runs under `torch.no_grad`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from utabench.core.errors import UtabenchError

SELECT_FEATURES = ("patch", "cls_patch")


@dataclass(frozen=True)
class EncoderSpec:
    """How the vision tower is taken from the backbone; stored in checkpoints beside the backbone entry."""

    layer: int = -2
    select: str = "patch"

    def __post_init__(self):
        if self.select not in SELECT_FEATURES:
            raise UtabenchError(f"encoder feature selection {self.select!r}: choose one of {', '.join(SELECT_FEATURES)}")

    def to_dict(self):
        return asdict(self)


class FrozenEncoder(nn.Module):
    def __init__(self, backbone, spec: EncoderSpec):
        super().__init__()
        info = backbone.info
        if not -info.depth <= spec.layer < info.depth:
            raise UtabenchError(f"encoder layer {spec.layer} is outside {backbone.spec.key}'s {info.depth} blocks; "
                                f"use -{info.depth}..{info.depth - 1}")
        self.backbone, self.spec = backbone, spec
        self.prefix = info.num_prefix_tokens
        grid = info.input_size // info.patch_size
        self.num_tokens = grid * grid + (self.prefix if spec.select == "cls_patch" else 0)
        self.width = info.width
        self.patch_size = info.patch_size
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True):  # frozen: always in eval mode, whatever the caller asks
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, **_) -> BaseModelOutputWithPooling:
        tokens = self.backbone.token_features(pixel_values, [self.spec.layer])[0]
        if self.spec.select == "patch":
            tokens = tokens[:, self.prefix:]
        return BaseModelOutputWithPooling(last_hidden_state=tokens, hidden_states=(tokens,))
