"""Image towers that see only the kept patch tokens (FLIP-style masked contrastive training, paper A.4): the CLS token
and the patches a mask keeps enter the blocks, the masked ones are dropped, and the tower pools and projects as it
always does. Position embeddings are added before the drop (and a RoPE table is gathered at the kept positions), so
each kept token keeps its place in the grid, as the UTA student's `uta` input (`student.py`).

Two towers: open_clip's `VisionTransformer` (a `clip:` model, e.g. the CLIP teacher itself) and timm's `Eva` (a `uta`
image tower). `keep` is (B, K) patch indices, every sample keeping K; with every patch kept, in grid order, the output
equals the tower's own forward.
"""

from __future__ import annotations

import torch
from open_clip.transformer import VisionTransformer
from timm.models.eva import Eva
from torch import nn

from utabench.core.errors import UtabenchError


def _gather(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, 1 + N, C) tokens, CLS first -> (B, 1 + K, C): CLS, then the kept patches in `keep`'s order."""
    patches = x[:, 1:].gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
    return torch.cat([x[:, :1], patches], dim=1)


def check_kept_tower(tower: nn.Module, where: str) -> None:
    """Refuse a tower whose tokens cannot be dropped here: not one of the two kinds, or one that already drops
    patches at random (open_clip's patch dropout) or pools with attention over a fixed token count."""
    if isinstance(tower, VisionTransformer):
        if not isinstance(tower.patch_dropout, nn.Identity) or tower.attn_pool is not None:
            raise UtabenchError(f"{where}: its image tower drops patches or pools with attention already; masked "
                                "contrastive fine-tuning needs a plain ViT tower")
    elif isinstance(tower, Eva):
        if tower.num_prefix_tokens != 1 or getattr(tower, "rope_mixed", False):
            raise UtabenchError(f"{where}: masked contrastive fine-tuning needs one CLS token and one RoPE table")
    else:
        raise UtabenchError(f"{where}: masked contrastive fine-tuning drops tokens of an open_clip VisionTransformer "
                            f"or a uta (timm Eva) tower, not a {type(tower).__name__}")


def kept_image_features(tower: nn.Module, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The tower's pooled, projected image embedding (B, D) with only CLS and the `keep` patches in the blocks."""
    if isinstance(tower, VisionTransformer):
        x = _gather(tower._embeds(images), keep)  # position embedding, ln_pre: per token, so dropping after is the same
        x = tower.transformer(x)
        pooled, _ = tower._pool(x)
        return pooled @ tower.proj if tower.proj is not None else pooled
    x, rope = tower._pos_embed(tower.patch_embed(images))
    x = _gather(x, keep)
    if rope is not None:
        rope = rope[keep].unsqueeze(1)  # (B, 1, K, rope dim): one table per sample, broadcast over heads
    x = tower.norm_pre(x)
    for block in tower.blocks:
        x = block(x, rope=rope)
    return tower.forward_head(tower.norm(x))
