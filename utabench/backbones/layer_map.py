"""The layer map that timm's layer-wise lr decay reads (`group_matcher`): which parameters of a transformer tower
are its embeddings (layer 0) and which belong to block i (layer i + 1); the rest (final norm, head, projection)
come after the last block. One map covers the towers utabench trains: timm ViT / EVA (uta, eva02), open_clip's
VisionTransformer and its TextTransformer; it is the `Trunk.layer_of` of the timm Eva and open_clip trunks."""

from __future__ import annotations

import re
from typing import Dict, Optional

_STEM = (r"(?:cls_token|reg_token|pos_embed|patch_embed|norm_pre|class_embedding|positional_embedding|conv1|ln_pre"
         r"|token_embedding|cls_emb)")
_BLOCKS = r"(?:blocks|transformer\.resblocks)\.(\d+)"
_STEM_AT, _BLOCK_AT = re.compile(_STEM), re.compile(_BLOCKS)


def group_matcher(prefix: str = "") -> Dict:
    """timm's `group_matcher` for a tower whose parameter names start with `prefix` (e.g. "tower.")."""
    start = "^" + re.escape(prefix)
    return {"stem": start + _STEM, "blocks": [(start + _BLOCKS, None)]}


def layer_of(name: str) -> Optional[int]:
    """The layer of a parameter named relative to its tower: 0 for the embeddings, i + 1 for block i's, None for
    what comes after the last block."""
    if _STEM_AT.match(name):
        return 0
    block = _BLOCK_AT.match(name)
    return int(block.group(1)) + 1 if block else None
