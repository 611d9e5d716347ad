"""Contrastive fine-tuning (objective clip-ft, paper A.1): the loss at the fixed temperature against open_clip's and
the formula on the initial backbone's own features, the layer-decay groups of both towers against the formula, the
B/14 -> B/16 patch conversion on a smooth image, exact resume after a kill, and the export running as `uta:`
through the CLI."""

from __future__ import annotations

import math
import random

import open_clip
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from utabench.backbones import build_backbone
from utabench.backbones.uta import build_uta_vision, load_uta_config
from utabench.core.errors import UtabenchError
from utabench.harness.cli import main
from utabench.pretrain.config import build_config
from utabench.pretrain.contrastive_ft import ContrastiveFinetuneRecipe, convert_patch_size
from utabench.pretrain.run import pretrain
from utabench.training.trainer import Trainer

INIT = {"spec": "uta:world", "seed": 1}


def _cfg(world, **contrastive):
    return build_config({"objective": "clip-ft", "init": INIT, "contrastive": contrastive,
                         "data": {"type": "webdataset", "shards": str(world / "pairs" / "pairs-*.tar")},
                         "optim": {"batch_size": 8, "steps": 5, "warmup_steps": 1, "lr": 1e-3}, "workers": 0,
                         "checkpoint_every": 1}, "test")


def _batch(recipe, n=8):
    items = [recipe.dataset[(i, 0)] for i in range(n)]
    return {"image": torch.stack([x["image"] for x in items]), "caption": [x["caption"] for x in items]}


def test_loss_at_fixed_temperature_equals_open_clips_on_the_backbones_features(world):
    recipe = ContrastiveFinetuneRecipe(_cfg(world))
    batch = _batch(recipe)
    loss = recipe.loss(recipe.module, batch, torch.device("cpu"))
    init = build_backbone(INIT)  # the same weights, through the evaluation path (its transform's mean/std)
    with torch.no_grad():
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in init.normalisation())
        image = F.normalize(init.encode_image((batch["image"] - mean) / std), dim=-1)
        text = F.normalize(init.encode_text(init.tokenize(batch["caption"])), dim=-1)
    theirs = open_clip.ClipLoss()(image, text, torch.tensor(100.0))
    logits = 100.0 * image @ text.T
    by_hand = (F.cross_entropy(logits, torch.arange(8)) + F.cross_entropy(logits.T, torch.arange(8))) / 2
    assert torch.allclose(loss, theirs, atol=1e-5) and torch.allclose(loss, by_hand, atol=1e-5)
    assert not torch.allclose(loss, open_clip.ClipLoss()(image, text, torch.tensor(1 / 0.07)), atol=1e-3)


def test_layer_decay_groups_of_both_towers_follow_the_formula(world):
    recipe = ContrastiveFinetuneRecipe(_cfg(world, layer_decay=0.75, text_layer_decay=0.5))
    model = recipe.module
    scale = {}
    for group in recipe.param_groups(model):
        for p in group["params"]:
            scale[id(p)] = (group["lr_scale"], group["weight_decay"])

    def expected(name, decay, depth, stem, block):
        layer = 0 if name.startswith(stem) else (int(name.split(".")[block]) + 1 if name.startswith(
            ("blocks.", "transformer.resblocks.")) else depth + 1)
        return decay ** (depth + 1 - layer)

    for name, p in model.visual.named_parameters():
        wd = 0.0 if p.ndim <= 1 or name in ("pos_embed", "cls_token") else 0.05
        assert scale[id(p)] == (pytest.approx(expected(name, 0.75, 4, ("cls_token", "pos_embed", "patch_embed"), 1)),
                                wd), name
    for name, p in model.text.named_parameters():
        wd = 0.0 if p.ndim <= 1 or name == "positional_embedding" else 0.05
        assert scale[id(p)] == (pytest.approx(expected(name, 0.5, 2, ("token_embedding", "positional_embedding"), 2)),
                                wd), name
    assert len(scale) == sum(1 for _ in model.parameters())
    locked = ContrastiveFinetuneRecipe(_cfg(world, lock_text=True))
    trained = {id(p) for g in locked.param_groups(locked.module) for p in g["params"]}
    assert trained == {id(p) for p in locked.module.visual.parameters()}


def test_b14_to_b16_conversion_keeps_a_smooth_images_embedding():
    """Tolerance: cosine >= 0.99 between the B/14 and converted B/16 embeddings of the same smooth image (measured
    0.996-0.997 at seed 0), where two different smooth images are at most 0.93 apart."""
    torch.manual_seed(0)
    cfg = load_uta_config("B-14")
    b14 = build_uta_vision(cfg["vision"], cfg["embed_dim"]).eval()
    b16 = convert_patch_size(b14, cfg["vision"], cfg["embed_dim"], 16).eval()
    assert b16.patch_embed.proj.kernel_size == (16, 16) and b16.pos_embed.shape[1] == 1 + 14 * 14
    y, x = torch.meshgrid(torch.linspace(0, 1, 224), torch.linspace(0, 1, 224), indexing="ij")
    images = torch.stack([torch.stack([torch.sin(a * math.pi * x), torch.cos(b * math.pi * y), x * y]) * 2 - 1
                          for a, b in ((1, 1), (2, 0.5), (0.5, 2))])
    with torch.no_grad():
        e14, e16 = F.normalize(b14(images), dim=-1), F.normalize(b16(images), dim=-1)
    same = (e14 * e16).sum(-1)
    assert (same >= 0.99).all(), same
    assert (e14 @ e14.T - torch.eye(3)).max() < same.min()


def test_a_non_uta_init_and_a_missing_init_are_refused(world):
    with pytest.raises(UtabenchError, match="starts from a uta backbone .* or a clip model"):
        ContrastiveFinetuneRecipe({**_cfg(world), "init": {"spec": "eva02:eva02_tiny_patch14_224", "image_size": 56}})
    with pytest.raises(UtabenchError, match="objective clip-ft needs `init`"):
        build_config({"objective": "clip-ft", "data": {"type": "webdataset", "shards": "x"}}, "test")
    with pytest.raises(UtabenchError, match="stores no logit_scale beside its text tower"):
        ContrastiveFinetuneRecipe(_cfg(world, temperature="init"))  # a random init has no trained temperature
    with pytest.raises(UtabenchError, match="temprature"):
        build_config({"objective": "clip-ft", "init": INIT, "contrastive": {"temprature": 0.01},
                      "data": {"type": "webdataset", "shards": "x"}}, "test")


def _train(world, out, kill_after=None):
    cfg = _cfg(world)
    recipe = ContrastiveFinetuneRecipe(cfg)
    if kill_after is not None:  # dies during the step after `kill_after` (its checkpoint is the last one written)
        loss, calls = recipe.loss, []

        def dying(*args):
            calls.append(1)
            if len(calls) > kill_after:
                raise KeyboardInterrupt
            return loss(*args)
        recipe.loss = dying
    Trainer(cfg, recipe, out, progress=False, log=lambda _: None).run()
    return load_file(str(out / "final.safetensors"))


def test_killed_contrastive_fine_tuning_resumes_bit_identically(world, tmp_path):
    straight = _train(world, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _train(world, tmp_path / "b", kill_after=random.Random(3).randint(1, 4))
    resumed = _train(world, tmp_path / "b")  # the same command again: it resumes (LAMB state, schedule, RNG)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    start = build_backbone(INIT).vision_tower().state_dict()["patch_embed.proj.weight"]
    assert not torch.equal(start, straight["visual.patch_embed.proj.weight"])  # it did train


def test_cli_fine_tunes_and_the_export_runs_as_uta(world, tmp_path):
    config = tmp_path / "cft.yaml"
    config.write_text(yaml.safe_dump({
        "init": INIT, "contrastive": {"patch_size": 12},
        "data": {"type": "webdataset", "shards": str(world / "pairs" / "pairs-*.tar")},
        "optim": {"batch_size": 8, "steps": 2, "warmup_steps": 1, "lr": 1e-3}, "workers": 0}))
    out = tmp_path / "out"
    assert main(["pretrain", "clip-ft", "--config", str(config), "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    spec = f"uta:{out / 'uta-config.json'}"  # patch 12 matches no bundled config: the converted one is written
    assert load_uta_config(str(out / "uta-config.json"))["vision"]["patch_size"] == 12
    assert main(["run", "zeroshot-classification", "--backbone", spec, "--checkpoint", str(out / "final.safetensors"),
                 "--dataset", f"imagenet:{world / 'imagenet'}", "--classes", str(world / "classes.json"),
                 "--results", str(tmp_path / "r"), "--device", "cpu", "--no-progress"]) == 0
    meta = pretrain(build_config(yaml.safe_load(config.read_text()), "again", "clip-ft"), out, progress=False)
    assert meta["objective"] == "clip-ft" and meta["init"] == "uta:world"  # reused, not retrained
    again = build_config({"objective": "clip-ft", "init": {"spec": spec, "checkpoint": str(out / "final.safetensors")},
                          "contrastive": {"temperature": "init"},
                          "data": {"type": "webdataset", "shards": str(world / "pairs" / "pairs-*.tar")}}, "again")
    assert ContrastiveFinetuneRecipe(again).temperature == pytest.approx(0.01)  # the export stores its logit scale
