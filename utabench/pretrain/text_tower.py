"""Per-token features of an open_clip text tower in the joint image-text space: what text UTA aligns.

open_clip's CLIP text towers (the one built into `CLIP` and `CustomTextCLIP`'s `TextTransformer`) embed the tokens,
add the position embeddings, run a causal transformer, apply `ln_final`, pool the EOT token (the `argmax` of the
ids) and project it with `text_projection`. `JointTextTokens` runs the same modules and gives every token that path:
(B, L, embed_dim), the EOT row equal to `encode_text`, as an image tower's `joint_tokens` gives every patch the
path of its CLS.

It also runs a subset of a text's positions (the kept tokens, in order, each with its own position embedding):
under the causal mask a token attends only to the tokens before it, so whatever stands after a row's last kept
token (the filler that makes rows of different lengths one batch) changes none of the kept tokens' features.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from utabench.core.errors import UtabenchError


def text_tower_of(model: nn.Module) -> nn.Module:
    """The module that holds an open_clip model's text tower: `model.text` (CustomTextCLIP) or the model (CLIP)."""
    return model.text if hasattr(model, "text") else model


class JointTextTokens(nn.Module):
    """A view over an open_clip model's text tower (its parameters, shared, not copied)."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        text = text_tower_of(model)
        pool = getattr(text, "pool_type", getattr(text, "text_pool_type", None))
        if (pool != "argmax" or getattr(text, "cls_emb", None) is not None or getattr(text, "use_pad_mask", False)
                or getattr(text, "attn_mask", None) is None):
            raise UtabenchError(f"{name}: text UTA needs a causal CLIP text tower pooled at its EOT token "
                                f"(pool_type argmax, no CLS embedding, no padding mask); this one pools {pool!r}")
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", text.attn_mask.detach().clone(), persistent=False)

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    def forward(self, tokens: torch.Tensor, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tokens (B, L) ids; positions (B, L) the place of each in its text (default: 0 .. L-1). Returns
        (B, L, embed_dim): each token after ln_final and text_projection."""
        dtype = self.transformer.get_cast_dtype()
        length = tokens.shape[1]
        x = self.token_embedding(tokens).to(dtype)
        pos = self.positional_embedding[:length] if positions is None else self.positional_embedding[positions]
        x = x + pos.to(dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x if self.text_projection is None else x @ self.text_projection
