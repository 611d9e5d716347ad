"""Paper A.4, the comparison with the teacher (Table 11): contrastive fine-tuning of a CLIP itself (its weights loaded
exactly, the export loading as the same clip model), masked fine-tuning that feeds only the kept tokens, the configs'
refusals and sample budgets, and Table 11 from records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from utabench.backbones import build_backbone
from utabench.core.errors import UtabenchError
from utabench.core.threads import cpu_threads
from utabench.harness.plugins import load_all
from utabench.harness.tables import render
from utabench.pretrain.config import build_config, load_pretrain_config
from utabench.pretrain.contrastive_ft import ContrastiveFinetuneRecipe
from utabench.pretrain.kept_tokens import kept_image_features
from utabench.pretrain.masking import MaskGenerator, MaskSpec
from utabench.training.fingerprint import run_fingerprint
from utabench.world.build import DEFAULT_COUNTS, world_wnids

load_all()
PRETRAIN = Path(__file__).resolve().parents[1] / "utabench" / "configs" / "pretrain"
CLIP = {"spec": "clip:utabench-clip-world", "seed": 2}


@pytest.fixture(autouse=True)
def _threads():
    with cpu_threads(1):  # the project's own set-and-restore of torch's thread count
        yield


def _cfg(world, init=CLIP, **contrastive):
    return build_config({"objective": "clip-ft", "init": init, "contrastive": contrastive,
                         "mask": {"type": "block-r", "ratio": 0.5, "min_block": 4},
                         "data": {"type": "webdataset", "shards": str(world / "pairs" / "pairs-*.tar")},
                         "optim": {"batch_size": 8, "steps": 2, "warmup_steps": 1}, "workers": 0}, "test")


def _batch(recipe, n=8):
    items = [recipe.dataset[(i, 0)] for i in range(n)]
    batch = {"image": torch.stack([x["image"] for x in items]), "caption": [x["caption"] for x in items]}
    if "mask" in items[0]:
        batch["mask"] = torch.stack([x["mask"] for x in items])
    return batch


def _entering(module):
    """The shapes of what enters `module` (a forward pre-hook), and its handle."""
    seen = []
    return seen, module.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))


@pytest.mark.parametrize("spec, first", [("clip:utabench-clip-world", "transformer"), ("uta:world", "blocks.0")])
def test_kept_tokens_alone_enter_and_every_patch_kept_is_the_towers_forward(spec, first):
    tower = build_backbone({"spec": spec, "seed": 1}).vision_tower()
    images = torch.rand(4, 3, 48, 48)
    every = torch.arange(36).expand(4, -1)  # a mask of ratio 0: the unmasked forward
    with torch.no_grad():
        assert torch.allclose(kept_image_features(tower, images, every), tower(images), atol=1e-5)
        generate = MaskGenerator((6, 6), MaskSpec("block-r", 0.5, 4))
        mask = torch.from_numpy(np.stack([generate(np.random.default_rng(i)) for i in range(4)]))
        keep = (~mask).nonzero()[:, 1].view(4, -1)
        seen, hook = _entering(tower.get_submodule(first))
        out = kept_image_features(tower, images, keep)
        hook.remove()
        assert seen == [(4, 1 + 18, seen[0][-1])]  # CLS + the 18 kept patches of 36
        pixels = mask.view(4, 6, 6).repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None].expand(-1, 3, -1, -1)
        noise = torch.rand_like(images)
        assert torch.equal(kept_image_features(tower, torch.where(pixels, noise, images), keep), out)  # masked: unseen
        changed = kept_image_features(tower, torch.where(pixels, images, noise), keep)
        assert (changed - out).abs().max() > 0.01 * out.abs().max()  # kept: seen


def test_masked_fine_tuning_trains_on_kept_tokens_and_evaluates_on_all(world):
    recipe = ContrastiveFinetuneRecipe(_cfg(world, temperature=0.01, mask=True))
    batch = _batch(recipe)
    assert batch["mask"].sum(1).tolist() == [18] * 8
    seen, hook = _entering(recipe.module.visual.transformer)
    recipe.loss(recipe.module, batch, torch.device("cpu")).backward()
    with torch.no_grad():
        recipe.module.visual(recipe.norm(batch["image"]))  # the export's forward: every patch
    hook.remove()
    assert [shape[1] for shape in seen] == [1 + 18, 1 + 36]
    unmasked = ContrastiveFinetuneRecipe(_cfg(world, temperature=0.01))
    assert "mask" not in _batch(unmasked, 1)


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_a_clip_init_is_its_weights_at_step_0_and_exports_as_the_same_model(world, tmp_path, quick_gelu):
    entry = {**CLIP, "quick_gelu": quick_gelu}
    recipe = ContrastiveFinetuneRecipe(_cfg(world, init=entry, temperature="init"))
    source = build_backbone(entry)
    batch = _batch(recipe)
    with torch.no_grad():
        image, text = recipe.module(recipe.norm(batch["image"]), recipe.tokenizer(batch["caption"]))
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in source.normalisation())
        assert torch.equal(image, F.normalize(source.encode_image((batch["image"] - mean) / std), dim=-1))
        assert torch.equal(text, F.normalize(source.encode_text(source.tokenize(batch["caption"])), dim=-1))
    assert recipe.temperature == pytest.approx(1 / source.model.logit_scale.exp().item())
    meta = recipe.export(tmp_path, 0)
    assert meta["backbone"]["spec"] == "clip:utabench-clip-world" and meta["backbone"]["quick_gelu"] is quick_gelu
    loaded = build_backbone(meta["backbone"])
    ours, theirs = loaded.model.state_dict(), source.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k != "logit_scale")
    assert torch.allclose(ours["logit_scale"], theirs["logit_scale"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(batch["image"]), source.encode_image(batch["image"]))


def _refused(raw, match):
    with pytest.raises(UtabenchError, match=match) as exc:
        build_config({"data": {"type": "webdataset", "shards": "x"}, **raw}, "test")
    assert "\n" not in str(exc.value)


def test_refusals_are_one_line(world):
    _refused({"objective": "uta", "teacher": CLIP, "contrastive": {"mask": True}},
             "contrastive.mask applies to contrastive fine-tuning")
    _refused({"objective": "clip-ft", "init": {"spec": "eva02:eva02_tiny_patch14_224"}},
             "fine-tunes a uta student or a clip model .* not a eva02 backbone")
    _refused({"objective": "clip-ft", "init": CLIP, "contrastive": {"maks": True}}, "did you mean 'mask'")
    _refused({"objective": "clip-ft", "init": CLIP, "contrastive": {"mask": "half"}}, "mask")
    with pytest.raises(UtabenchError, match="converts a uta student's patch size") as exc:
        ContrastiveFinetuneRecipe(_cfg(world, patch_size=16))
    assert "\n" not in str(exc.value)
    base = {"objective": "clip-ft", "init": CLIP, "data": {"type": "webdataset", "shards": "x"}}
    unset, off, on = (run_fingerprint(build_config({**base, "contrastive": c}, "t")) for c in ({}, {"mask": False},
                                                                                              {"mask": True}))
    assert unset == off != on  # unmasked runs keep their fingerprints


@pytest.fixture
def _paths(monkeypatch):
    monkeypatch.setenv("UTABENCH_CKPT", "/ckpt")
    monkeypatch.setenv("UTABENCH_DATA", "/data")


def test_paper_and_world_arms_state_the_papers_sample_budgets(_paths):
    def samples(name):
        optim = load_pretrain_config(str(PRETRAIN / f"{name}.yaml"))["optim"]
        return optim["steps"] * optim["batch_size"]
    assert samples("table11-clip-l14-ft") == pytest.approx(2.0e9, abs=49152)
    assert samples("table11-clip-l14-ft-mask") == pytest.approx(4.0e9, abs=49152)
    assert samples("table11-uta-l14") == pytest.approx(0.8e9, abs=49152)
    masked = load_pretrain_config(str(PRETRAIN / "table11-clip-l14-ft-mask.yaml"))
    assert masked["contrastive"]["mask"] and (masked["mask"]["type"], masked["mask"]["ratio"]) == ("block-r", 0.5)
    student = load_pretrain_config(str(PRETRAIN / "table11-uta-l14-pretrain.yaml"))
    assert student["optim"]["epochs"] == 90 and student["teacher"]["spec"] == "clip:ViT-L-14-quickgelu"
    # the world: the UTA arm's distillation (24 epochs of 32) and fine-tuning (4 epochs of 64) = the teacher arm's
    images, pairs = DEFAULT_COUNTS["train"] * len(world_wnids()), DEFAULT_COUNTS["pairs"]
    uta = 24 * (images // 32) * 32 + 4 * (pairs // 64) * 64
    assert samples("world-teacher-ft") == uta and samples("world-teacher-ft-mask") == 2 * uta


def _record(backbone, top1, steps=None, batch=None, **pretrain):
    row = {"backbone": backbone, "task": "zeroshot-classification", "dataset_type": "imagenet", "status": "complete",
           "provenance.backbone.checkpoint": f"/{backbone}.safetensors", "metrics.top1": top1,
           "pretrain.steps": steps, "pretrain.setup.batch_size": batch}
    row.update({f"pretrain.{k}": v for k, v in pretrain.items()})
    return row


def _records(uta=89.0, tuned=88.0, masked=87.5):
    return pd.DataFrame([
        _record("teacher", 90.0, 1860, 64, objective="clip"),
        _record("student", 84.0, 2232, 32, objective="uta", teacher="/teacher.safetensors"),
        _record("uta-cft", uta, 372, 64, objective="clip-ft", init="/student.safetensors",
                **{"paper.table": 11, "paper.row": "UTA-L"}),
        _record("clip-ft", tuned, 1488, 64, objective="clip-ft", init="/teacher.safetensors",
                **{"paper.table": 11, "paper.row": "CLIP-L FT"}),
        _record("clip-ft-mask", masked, 2976, 64, objective="clip-ft", init="/teacher.safetensors",
                **{"paper.table": 11, "paper.row": "CLIP-L FT + Block-R 0.5"}),
    ])


def _cells(line):
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_table11_gives_budgets_scores_and_the_published_rows_with_delta():
    lines = render(_records(), tables=[11], with_paper=False).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| CLIP-L FT "))
    assert [_cells(line) for line in lines[start:start + 9]] == [
        ["CLIP-L FT", "clip-ft", "teacher", "—", "95,232", "95,232", "88.0", "+1.0"],
        ["↳ paper", "", "", "—", "2.0B", "2.0B", "76.5", "+1.3"],
        ["↳ Δ (ours − paper)", "", "", "—", "—", "—", "+11.5", "-0.3"],
        ["CLIP-L FT + Block-R 0.5", "clip-ft-mask", "teacher", "—", "190,464", "190,464", "87.5", "+1.5"],
        ["↳ paper", "", "", "—", "4.0B", "4.0B", "76.8", "+1.0"],
        ["↳ Δ (ours − paper)", "", "", "—", "—", "—", "+10.7", "+0.5"],
        ["UTA-L", "uta-cft", "student", "71,424", "23,808", "95,232", "89.0", "+0.0"],
        ["↳ paper", "", "", "1.2B", "0.8B", "2.0B", "77.8", "+0.0"],
        ["↳ Δ (ours − paper)", "", "", "—", "—", "—", "+11.2", "+0.0"]]
    records = _records()
    assert not any(line.startswith("| UTA-L ") for line in render(records[records.backbone != "student"],
                                                                    tables=[11], with_paper=False).splitlines()
                   if "95,232" in line)  # without its student's record, the UTA arm's budget is unknown
