"""The paper's checkpoints load as they are published: OpenAI's TorchScript `.pt` (read without running it), open_clip
hub files and folders, BAAI's original EVA-02-CLIP layout. Each layout is written here from a random model and must
give that model's outputs."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import open_clip
import pytest
import torch
from safetensors.torch import save_file

import utabench.backbones  # noqa: F401  (adds utabench's open_clip configs)
from utabench.backbones import build_backbone
from utabench.backbones.uta_checkpoint import _RENAMES
from utabench.core.checkpoint import read_state_dict
from utabench.core.errors import UtabenchError

TOL = 1e-5
TEXTS = ["a photo of a circle.", "a red star on grass"]


def _outputs(model_or_backbone, size):
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = open_clip.get_tokenizer("utabench-clip-tiny")(TEXTS)
    with torch.no_grad():
        return model_or_backbone.encode_image(images), model_or_backbone.encode_text(tokens)


def _close(ours, theirs):
    return all((a - b).abs().max() <= TOL for a, b in zip(ours, theirs))


def _openai_reference():
    torch.manual_seed(7)
    model = open_clip.create_model("utabench-clip-tiny", force_quick_gelu=True).eval()
    for name, value in (("input_resolution", 64), ("context_length", 32), ("vocab_size", 49408)):
        model.__dict__.pop(name, None)
        model.register_buffer(name, torch.tensor(value))  # 0-d tensors beside the weights, as in OpenAI's archives
    return model


def _openai_archive(tmp_path):
    model = _openai_reference()
    images, tokens = torch.randn(1, 3, 64, 64), open_clip.get_tokenizer("utabench-clip-tiny")(TEXTS[:1])
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.trace(model, (images, tokens), check_trace=False), str(path))
    return model, path


def test_openai_torchscript_release_loads_without_running_it(tmp_path):
    reference, path = _openai_archive(tmp_path)
    state = read_state_dict(path)
    scripted = torch.jit.load(str(path)).state_dict()  # what running the archive would give (our own file)
    assert set(state) == set(scripted) and all(torch.equal(state[k], scripted[k]) for k in state)
    assert {"input_resolution", "context_length", "vocab_size"} <= set(state)
    ours = build_backbone({"spec": "clip:utabench-clip-tiny", "checkpoint": str(path)})  # QuickGELU from the release
    assert _close(_outputs(ours, 64), _outputs(reference, 64))
    gelu = build_backbone({"spec": "clip:utabench-clip-tiny", "checkpoint": str(path), "quick_gelu": False})
    assert not _close(_outputs(gelu, 64), _outputs(reference, 64))  # the activation matters: the default is right


def test_torchscript_archive_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:  # a TorchScript-shaped zip whose data.pkl calls os.system
        archive.writestr("evil/constants.pkl", pickle.dumps(()))
        archive.writestr("evil/data.pkl", b"cposix\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
    with pytest.raises(UtabenchError, match=r"data.pkl refers to posix.system: utabench reads only tensors"):
        read_state_dict(path)
    assert not marker.exists()

    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            return x * self.weight

        @torch.jit.export
        def __getstate__(self):
            return (self.weight, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]):
            self.weight = state[0] * 2  # what torch.jit.load would run
            self.training = state[1]

    scripted = tmp_path / "custom.pt"
    torch.jit.save(torch.jit.script(Custom()), str(scripted))
    with pytest.raises(UtabenchError, match="its own __getstate__"):
        read_state_dict(scripted)


@pytest.mark.parametrize("layout", ["folder", "safetensors", "bin"])
def test_open_clip_hub_files(tmp_path, layout):
    reference = _openai_reference()
    state = {k: v for k, v in reference.state_dict().items() if k not in ("input_resolution", "context_length",
                                                                             "vocab_size")}
    hub = tmp_path / "hub"
    hub.mkdir()
    config = {"model_cfg": {**open_clip.get_model_config("utabench-clip-tiny"), "quick_gelu": True},
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073]}}
    (hub / "open_clip_config.json").write_text(json.dumps(config))
    if layout == "bin":
        torch.save(state, hub / "open_clip_pytorch_model.bin")
    else:
        save_file(state, str(hub / "open_clip_model.safetensors"))
    checkpoint = {"folder": hub, "safetensors": hub / "open_clip_model.safetensors",
                  "bin": hub / "open_clip_pytorch_model.bin"}[layout]
    ours = build_backbone({"spec": "clip:utabench-clip-tiny", "checkpoint": str(checkpoint)})
    assert _close(_outputs(ours, 64), _outputs(reference, 64))  # QuickGELU from open_clip_config.json
    config["model_cfg"]["vision_cfg"]["width"] = 128
    (hub / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(UtabenchError, match=r"describes another model than utabench-clip-tiny \(vision_cfg.width 128"):
        build_backbone({"spec": "clip:utabench-clip-tiny", "checkpoint": str(checkpoint)})


def _baai_eva_clip_state(model, text_prefixed: bool) -> dict:
    """An open_clip EVA02-CLIP model written in BAAI's original EVA-CLIP layout: `visual.*` with EVA names (w1/w2/w3,
    ffn_ln, inner_attn_ln, q_bias/v_bias), RoPE buffers in the tower and in every block, the projection as
    `visual.head`, and the text tower at the top level (CLIP class) or under `text.` (CustomCLIP)."""
    renames = _RENAMES + ((".attn.inner_attn_ln.", ".attn.norm."),)
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("visual.trunk."):
            key = "visual." + key[len("visual.trunk."):]
            for old, new in renames:
                key = key.replace(new, old)
        elif key.startswith("text.") and not text_prefixed:
            key = key[len("text."):]
        out[key] = value.clone()
    trunk = model.visual.trunk
    rope = torch.randn(trunk.patch_embed.num_patches, trunk.embed_dim // trunk.blocks[0].attn.num_heads)
    out["visual.rope.freqs_cos"] = out["visual.rope.freqs_sin"] = rope
    for i in range(len(trunk.blocks)):
        out[f"visual.blocks.{i}.attn.rope.freqs_cos"] = out[f"visual.blocks.{i}.attn.rope.freqs_sin"] = rope
    return out


@pytest.fixture(scope="module")
def eva02_clip_config(tmp_path_factory):
    """A tiny open_clip config whose timm tower has EVA-02-CLIP's architecture (separate q/k/v with q/v biases,
    SwiGLU with sub-LN, the attention's inner LN, RoPE), as `EVA02-B-16`'s eva02_base_patch16_clip_224 has."""
    import timm
    from timm.models.eva import Eva

    name = "utabench_test_eva02_clip_tiny"
    if name not in timm.list_models(name):
        @timm.models.register_model
        def utabench_test_eva02_clip_tiny(pretrained=False, **kwargs):  # noqa: F811
            kwargs = {k: v for k, v in kwargs.items() if k in ("num_classes", "global_pool", "drop_rate",
                                                               "drop_path_rate", "img_size")}
            return Eva(**{"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2,
                          "mlp_ratio": 4 * 2 / 3, "qkv_fused": False, "swiglu_mlp": True, "scale_mlp": True,
                          "scale_attn_inner": True, "use_rot_pos_emb": True, "ref_feat_shape": (4, 4), **kwargs})
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "utabench-test-eva02-clip.json").write_text(json.dumps({
        "embed_dim": 32, "custom_text": True,
        "vision_cfg": {"image_size": 32, "timm_model_name": name, "timm_model_pretrained": False, "timm_pool": "token",
                       "timm_proj": None},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(folder)
    return "utabench-test-eva02-clip"


@pytest.mark.parametrize("text_prefixed", [False, True])
def test_baai_eva02_clip_layout(tmp_path, eva02_clip_config, text_prefixed):
    torch.manual_seed(3)
    reference = open_clip.create_model(eva02_clip_config).eval()
    state = _baai_eva_clip_state(reference, text_prefixed)
    for key in ("visual.blocks.0.mlp.w1.weight", "visual.blocks.0.mlp.ffn_ln.weight", "visual.blocks.0.attn.q_bias",
                "visual.blocks.0.attn.inner_attn_ln.weight", "visual.head.weight",
                "text.positional_embedding" if text_prefixed else "positional_embedding"):
        assert key in state, key
    path = tmp_path / "EVA02_CLIP_tiny.pt"
    torch.save(state, path)
    ours = build_backbone({"spec": f"eva02:{eva02_clip_config}", "checkpoint": str(path)})
    assert _close(_outputs(ours, 32), _outputs(reference, 32))


def test_an_open_clip_checkpoint_written_by_torch_save_still_loads(tmp_path):
    torch.manual_seed(5)
    reference = open_clip.create_model("utabench-clip-tiny").eval()
    path = tmp_path / "w.pt"
    torch.save({"state_dict": reference.state_dict()}, path)
    ours = build_backbone({"spec": "clip:utabench-clip-tiny", "checkpoint": str(path)})
    assert _close(_outputs(ours, 64), _outputs(reference, 64)) and os.path.getsize(path) > 0
