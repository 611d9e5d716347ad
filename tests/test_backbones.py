"""Each adapter equals its reference library's own forward on the same weights, loaded from the same file."""

from __future__ import annotations

import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file

from utabench.backbones import build_backbone
from utabench.backbones.uta import build_text_tower, build_uta_vision, load_uta_config
from utabench.backbones.uta_checkpoint import _RENAMES, timm_to_release
from utabench.core.errors import NotApplicable, UtabenchError

TOL = 1e-5


def _images(size, n=3, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family,model,extra", [
    ("clip", "utabench-clip-tiny", {}),
    ("eva02", "utabench-eva02-clip-tiny", {"image_size": 56}),
])
def test_open_clip_adapters_equal_open_clip(tmp_path, family, model, extra):
    torch.manual_seed(123)
    reference = open_clip.create_model(model).eval()  # checkpoints are saved at the config's native size
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    # open_clip's own loading path from the same file
    theirs = open_clip.create_model(model, pretrained=str(path), force_image_size=extra.get("image_size")).eval()
    ours = build_backbone({"spec": f"{family}:{model}", "checkpoint": str(path), **extra})
    images = _images(ours.info.input_size)
    tokens = ours.tokenize(["a photo of a circle.", "a red star"])
    with torch.no_grad():
        assert (ours.encode_image(images) - theirs.encode_image(images)).abs().max() <= TOL
        assert (ours.encode_text(tokens) - theirs.encode_text(tokens)).abs().max() <= TOL
        assert torch.equal(tokens, open_clip.get_tokenizer(model)(["a photo of a circle.", "a red star"]))
        feats = ours.token_features(images, [-1])[0]
    assert feats.shape == (3, 1 + (ours.info.input_size // ours.info.patch_size) ** 2, ours.info.width)
    assert ours.info.weights_sha256 and len(ours.info.weights_sha256) == 64


def _official_eva02_mim_state(model: torch.nn.Module) -> dict:
    """timm Eva weights written with the EVA-02 MIM release names (w1/w2/w3, ffn_ln, q_bias/v_bias, mask_token,
    lm_head, rope buffers), wrapped in {'module': ...} as the release files are."""
    state = {}
    for key, value in model.state_dict().items():
        if "rope" in key:
            continue
        for old, new in _RENAMES:
            key = key.replace(new, old)
        state[key.replace("fc_norm.", "norm.")] = value.clone()
    state["mask_token"] = torch.zeros(1, 1, model.embed_dim)
    state["lm_head.weight"] = torch.randn(1024, model.embed_dim)
    state["lm_head.bias"] = torch.zeros(1024)
    state["rope.freqs_cos"] = torch.ones(256, model.embed_dim // model.blocks[0].attn.num_heads)
    return {"module": state}


def test_eva02_mim_adapter_equals_timm(tmp_path):
    torch.manual_seed(5)
    source = timm.create_model("eva02_tiny_patch14_224", num_classes=0).eval()
    path = tmp_path / "eva02_T_pt_in21k_p14.pt"
    torch.save(_official_eva02_mim_state(source), path)
    theirs = timm.create_model("eva02_tiny_patch14_224.mim_in22k", pretrained=True, num_classes=0,
                               pretrained_cfg_overlay={"file": str(path)}).eval()
    ours = build_backbone({"spec": "eva02:eva02_tiny_patch14_224.mim_in22k", "checkpoint": str(path)})
    images = _images(224, n=2)
    with torch.no_grad():
        expected = theirs.forward_intermediates(images, indices=[3, 11], output_fmt="NLC", intermediates_only=True,
                                                return_prefix_tokens=True)
        got = ours.token_features(images, [3, -1])
        for (x, prefix), mine in zip(expected, got):
            assert (torch.cat([prefix, x], 1) - mine).abs().max() <= TOL
        assert (theirs.forward_features(images)[:, 0] - source.forward_features(images)[:, 0]).abs().max() <= TOL
    assert not ours.zero_shot_ready
    with pytest.raises(NotApplicable):
        ours.encode_image(images)


def _release_checkpoint(config="tiny", seed=7):
    cfg = load_uta_config(config)
    torch.manual_seed(seed)
    visual = build_uta_vision(cfg["vision"], cfg["embed_dim"]).eval()
    text = build_text_tower(cfg).eval()
    state = timm_to_release(visual, text.state_dict(), cfg["vision"]["pt_seq_len"], logit_scale=100.0)
    return cfg, visual, text, state


def test_uta_release_layout_loads_strictly_and_matches_timm(tmp_path):
    cfg, visual, text, state = _release_checkpoint()
    assert "visual.blocks.0.attn.q_bias" in state and "visual.blocks.0.mlp.w1.weight" in state
    assert "visual.blocks.0.mlp.ffn_ln.weight" in state and "visual.blocks.3.attn.rope.freqs_cos" in state
    assert "text.transformer.resblocks.0.attn.in_proj_weight" in state and "text.text_projection" in state
    assert not any(k.startswith("visual.") and "k_bias" in k for k in state)
    path = tmp_path / "uta_tiny.safetensors"
    save_file(state, str(path))
    ours = build_backbone({"spec": "uta:tiny", "checkpoint": str(path)})
    images = _images(64)
    tokens = ours.tokenize(["a red circle", "two shapes"])
    with torch.no_grad():
        assert (ours.encode_image(images) - visual(images)).abs().max() <= TOL
        assert (ours.encode_text(tokens) - text(tokens)).abs().max() <= TOL
    assert ours.zero_shot_ready and ours.info.embed_dim == 64


def test_uta_release_layout_as_torch_pickle(tmp_path):
    _, visual, _, state = _release_checkpoint(seed=8)
    path = tmp_path / "uta_tiny.pt"
    torch.save({"model": state}, path)
    ours = build_backbone({"spec": "uta:tiny", "checkpoint": str(path)})
    images = _images(64)
    with torch.no_grad():
        assert (ours.encode_image(images) - visual(images)).abs().max() <= TOL


def _eva_rope_reference(x, head_dim, grid, pt_seq_len, theta=10000.0):
    """EVA-02's rotary embedding, written out from its definition: for patch (r, c) and channel pair j of each
    half, angle = pos * theta^(-2j/(head_dim/2)), pos = r (first half) or c (second half) scaled by pt/grid;
    rotation of consecutive pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    half = head_dim // 2
    out = torch.empty_like(x)
    for n in range(grid * grid):
        r, c = divmod(n, grid)
        for j in range(head_dim // 2):
            pos = (r if 2 * j < half else c) * pt_seq_len / grid
            k = (2 * j) % half
            angle = pos * theta ** (-k / half)
            x0, x1 = x[..., n, 2 * j], x[..., n, 2 * j + 1]
            out[..., n, 2 * j] = x0 * torch.cos(torch.tensor(angle)) - x1 * torch.sin(torch.tensor(angle))
            out[..., n, 2 * j + 1] = x1 * torch.cos(torch.tensor(angle)) + x0 * torch.sin(torch.tensor(angle))
    return out


@pytest.mark.parametrize("config,image_size", [("tiny", 64), ("tiny", 96)])
def test_timm_rope_equals_eva02_rope(config, image_size):
    """timm's RoPE in our UTA model rotates q/k exactly as EVA-02's, including interpolation to a new grid."""
    from timm.layers import apply_rot_embed_cat

    cfg = load_uta_config(config)
    model = build_uta_vision(cfg["vision"], cfg["embed_dim"], image_size=image_size)
    head_dim = cfg["vision"]["width"] // cfg["vision"]["heads"]
    grid = image_size // cfg["vision"]["patch_size"]
    x = torch.randn(2, grid * grid, head_dim, generator=torch.Generator().manual_seed(0))
    ours = apply_rot_embed_cat(x, model.rope.get_embed())
    reference = _eva_rope_reference(x, head_dim, grid, cfg["vision"]["pt_seq_len"])
    assert (ours - reference).abs().max() <= 1e-5


def test_uta_rope_tables_checked_on_load(tmp_path):
    _, _, _, state = _release_checkpoint()
    state["visual.rope.freqs_cos"] = state["visual.rope.freqs_cos"] * 0.5
    path = tmp_path / "bad_rope.safetensors"
    save_file(state, str(path))
    with pytest.raises(UtabenchError, match="RoPE table"):
        build_backbone({"spec": "uta:tiny", "checkpoint": str(path)})


def test_uta_with_teacher_text_tower(tmp_path):
    torch.manual_seed(3)
    teacher = open_clip.create_model("utabench-clip-tiny").eval()
    teacher_path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), teacher_path)
    _, visual, _, state = _release_checkpoint()
    visual_only = {k: v for k, v in state.items() if not k.startswith("text.")}
    path = tmp_path / "uta_visual.safetensors"
    save_file(visual_only, str(path))
    alone = build_backbone({"spec": "uta:tiny", "checkpoint": str(path)})
    assert not alone.zero_shot_ready
    paired = build_backbone({"spec": "uta:tiny", "checkpoint": str(path),
                             "text": {"spec": "clip:utabench-clip-tiny", "checkpoint": str(teacher_path)}})
    tokens = paired.tokenize(["a circle"])
    with torch.no_grad():
        assert (paired.encode_text(tokens) - teacher.encode_text(tokens)).abs().max() <= TOL
    assert paired.zero_shot_ready


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    model = open_clip.create_model("utabench-clip-tiny")
    state = model.state_dict()
    state.pop("visual.proj")
    state["visual.extra_weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(UtabenchError) as err:
        build_backbone({"spec": "clip:utabench-clip-tiny", "checkpoint": str(path)})
    message = str(err.value)
    assert "missing keys: visual.proj" in message and "unexpected keys: visual.extra_weight" in message


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(1), "payload": _Exploit(str(marker))}, path)
    with pytest.raises(UtabenchError, match=r"holds pickled objects that are not tensors \(io.open\), which utabench "
                       "never unpickles"):
        build_backbone({"spec": "clip:utabench-clip-tiny", "checkpoint": str(path)})
    assert not marker.exists()


def test_unknown_backbone_names_list_known():
    with pytest.raises(UtabenchError, match="known backbone families: clip, eva02, uta"):
        build_backbone("resnet:50")
    with pytest.raises(UtabenchError, match="known: .*tiny"):
        build_backbone("uta:Z-99")
    with pytest.raises(UtabenchError, match="unknown open_clip model config"):
        build_backbone("clip:ViT-Q-1")


def test_real_size_uta_b16_metadata():
    backbone = build_backbone("uta:B-16")
    info = backbone.info
    assert (info.patch_size, info.input_size, info.width, info.depth, info.embed_dim) == (16, 224, 768, 12, 1024)
    assert backbone.visual.blocks[0].mlp.fc1_g.out_features == 2048
    assert backbone.visual.blocks[0].attn.norm.__class__.__name__ == "Identity"  # no inner attention LN


@pytest.mark.parametrize("entry", [{"spec": "clip:utabench-clip-tiny"}, {"spec": "clip:utabench-clip-world"},
                                   {"spec": "eva02:utabench-eva02-clip-tiny", "image_size": 56}, {"spec": "uta:tiny"}])
def test_joint_tokens_are_projected_tokens_whose_cls_is_the_image_embedding(entry):
    backbone = build_backbone({**entry, "seed": 2})
    size = backbone.info.input_size
    images = torch.randn(2, 3, size, size)
    tokens = backbone.joint_tokens(images)
    grid = size // backbone.info.patch_size
    assert tokens.shape == (2, 1 + grid * grid, backbone.info.embed_dim)
    assert torch.allclose(tokens[:, 0], backbone.encode_image(images), atol=1e-5)
    assert not torch.allclose(tokens[:, 1], tokens[:, 2])


def test_image_only_encoders_give_no_joint_tokens():
    backbone = build_backbone({"spec": "eva02:eva02_tiny_patch14_224", "image_size": 56})
    with pytest.raises(NotApplicable, match="no per-token features in a joint image-text space"):
        backbone.joint_tokens(torch.randn(1, 3, 56, 56))


def test_image_only_encoder_transform_follows_its_input_size():
    from PIL import Image

    backbone = build_backbone({"spec": "eva02:eva02_tiny_patch14_224", "image_size": 56})
    pixels = backbone.image_transform()(Image.new("RGB", (80, 64)))
    assert pixels.shape == (3, 56, 56)
    assert backbone.token_features(pixels[None], [-1])[0].shape == (1, 1 + 16, backbone.info.width)
