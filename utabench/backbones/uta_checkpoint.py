"""The UTA release checkpoint layout (`visual.*` + `text.*`, EVA-02 key names) <-> timm's Eva + open_clip's text tower.

Our own pretraining writes this same layout, so release checkpoints and ours load through one path.
RoPE tables (`rope.freqs_cos/sin`) are derived buffers: written for compatibility, checked on load, not loaded.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch

from utabench.core.errors import UtabenchError

# release (EVA-02) name -> timm Eva name, applied to the key after the `visual.` prefix
_RENAMES = (
    (".mlp.w1.", ".mlp.fc1_g."),
    (".mlp.w2.", ".mlp.fc1_x."),
    (".mlp.w3.", ".mlp.fc2."),
    (".mlp.ffn_ln.", ".mlp.norm."),
    (".attn.q_bias", ".attn.q_proj.bias"),
    (".attn.v_bias", ".attn.v_proj.bias"),
)


def eva_rope_tables(head_dim: int, grid: int, pt_seq_len: int, theta: float = 10000.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """EVA-02's 2D RoPE tables, (grid*grid, head_dim) each: the first half of a head's channels rotates with the
    row, the second half with the column; channel pairs are interleaved; positions are rescaled from the
    fine-tune grid to the pretraining grid (`pt_seq_len`)."""
    half = head_dim // 2
    inv_freq = 1.0 / theta ** (torch.arange(0, half, 2, dtype=torch.float32) / half)
    positions = torch.arange(grid, dtype=torch.float32) / grid * pt_seq_len
    angles = torch.repeat_interleave(positions[:, None] * inv_freq[None, :], 2, dim=1)  # (grid, half)
    rows = angles[:, None, :].expand(grid, grid, half)
    cols = angles[None, :, :].expand(grid, grid, half)
    table = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)
    return table.cos(), table.sin()


def _is_rope(key: str) -> bool:
    return key.endswith(("rope.freqs_cos", "rope.freqs_sin"))


def release_to_timm(state: Dict[str, torch.Tensor], source: str = "<checkpoint>"
                    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Split a release-layout state dict into (timm visual state, open_clip text state, rope tables)."""
    visual, text, rope, other = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith("visual."):
            name = key[len("visual."):]
            if _is_rope(name):
                rope[name] = value
                continue
            for old, new in _RENAMES:
                name = name.replace(old, new)
            visual[name] = value
        elif key.startswith("text."):
            text[key[len("text."):]] = value
        elif key != "logit_scale":
            other.append(key)
    if other or not visual:
        detail = f"unexpected keys: {', '.join(sorted(other)[:8])}" if other else "no `visual.*` keys"
        raise UtabenchError(
            f"checkpoint {source} is not in the UTA release layout ({detail}); expected `visual.*` "
            "(EVA-02 names), optional `text.*` and `logit_scale`"
        )
    return visual, text, rope


def check_rope_tables(rope: Dict[str, torch.Tensor], head_dim: int, grid: int, pt_seq_len: int, source: str) -> None:
    """The checkpoint's RoPE tables must be the ones this config derives (catches a wrong pt_seq_len or grid)."""
    table = rope.get("rope.freqs_cos")
    if table is None:
        return
    cos, _ = eva_rope_tables(head_dim, grid, pt_seq_len)
    if table.shape != cos.shape or not torch.allclose(table.float(), cos, atol=1e-4):
        raise UtabenchError(
            f"checkpoint {source}: its RoPE table {tuple(table.shape)} does not match this config "
            f"(head dim {head_dim}, grid {grid}x{grid}, pt_seq_len {pt_seq_len}); pick the config of the "
            "resolution and patch size the checkpoint was trained at"
        )


def timm_to_release(visual: torch.nn.Module, text: Dict[str, torch.Tensor] | None, pt_seq_len: int,
                    logit_scale: float | None = None) -> Dict[str, torch.Tensor]:
    """Write a timm Eva (+ open_clip text state) in the release layout, RoPE tables included where it has RoPE. A
    model without the learned absolute position embedding is written with a zero one: loaded as usual it computes
    the same function, and fine-tuning learns the embedding from zero (the positional-embedding ablation)."""
    out: Dict[str, torch.Tensor] = {}
    for name, value in visual.state_dict().items():
        if "rope" in name:
            continue
        for old, new in _RENAMES:
            name = name.replace(new, old)
        out["visual." + name] = value.detach().clone()
    if visual.pos_embed is None:
        tokens = visual.num_prefix_tokens + visual.patch_embed.num_patches
        out["visual.pos_embed"] = torch.zeros(1, tokens, visual.embed_dim, dtype=visual.patch_embed.proj.weight.dtype)
    if visual.rope is not None:
        head_dim = visual.embed_dim // visual.blocks[0].attn.num_heads
        cos, sin = eva_rope_tables(head_dim, visual.patch_embed.grid_size[0], pt_seq_len)
        out["visual.rope.freqs_cos"], out["visual.rope.freqs_sin"] = cos, sin
        for i in range(len(visual.blocks)):
            out[f"visual.blocks.{i}.attn.rope.freqs_cos"] = cos.clone()
            out[f"visual.blocks.{i}.attn.rope.freqs_sin"] = sin.clone()
    for name, value in (text or {}).items():
        out["text." + name] = value.detach().clone()
    if logit_scale is not None:
        out["logit_scale"] = torch.tensor(float(logit_scale))
    return out
