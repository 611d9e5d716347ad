"""Text UTA (objective text-uta, paper section 4): the token mask, the loss against an independent per-caption
recomputation, the export (the teacher's image tower, the student's text tower), the config's refusals and Table 10."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import default_collate

from utabench.backbones.factory import build_backbone
from utabench.core.errors import UtabenchError
from utabench.harness.plugins import load_all
from utabench.harness.tables import render
from utabench.pretrain.config import build_config, load_pretrain_config
from utabench.pretrain.masking import random_token_keep
from utabench.pretrain.run import pretrain
from utabench.pretrain.text_distill import TextDistillRecipe

load_all()
torch.set_num_threads(1)
PRETRAIN = Path(__file__).resolve().parents[1] / "utabench" / "configs" / "pretrain"

CAPTIONS = ["a photo of a circle.\na circle.", "a picture of a red star on a green field, drawn with thick lines.",
            "an image of a square.", "a triangle in the image.", "a.", "a hexagon next to a small blue ring."]


def _shards(tmp_path):
    """A webdataset shard of (jpg, txt) pairs; the jpg is never read by text UTA."""
    path = tmp_path / "pairs-00000.tar"
    with tarfile.open(path, "w") as tar:
        for i, caption in enumerate(CAPTIONS):
            for ext, data in (("jpg", b"\xff\xd8not-read"), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def _config(tmp_path, **changes):
    raw = {"objective": "text-uta", "teacher": {"spec": "clip:utabench-clip-world", "seed": 1},
           "model": "utabench-clip-world-small-text", "data": {"type": "webdataset", "shards": _shards(tmp_path)},
           "mask": {"type": "random", "ratio": 0.4}, "optim": {"batch_size": 3, "steps": 2, "warmup_steps": 1},
           "workers": 0, "seed": 0}
    return build_config({**raw, **changes}, "test")


def _batch(recipe, epoch=0):
    return default_collate([recipe.dataset[(i, epoch)] for i in range(len(recipe.dataset))])


def test_masking_keeps_sot_and_eot_and_leaves_padding_out(tmp_path):
    recipe = TextDistillRecipe(_config(tmp_path))
    for epoch in range(5):
        for i in range(len(recipe.dataset)):
            item = recipe.dataset[(i, epoch)]
            tokens, keep = item["tokens"], item["keep"]
            eot = int(tokens.argmax())
            words = eot - 1
            assert keep[0] and keep[eot] and not keep[eot + 1:].any() and (tokens[eot + 1:] == 0).all()
            assert int((~keep[1:eot]).sum()) == round(0.4 * words)
            assert torch.equal(keep, recipe.dataset[(i, epoch)]["keep"])  # a function of (seed, epoch, index)
    masks = {tuple(recipe.dataset[(1, epoch)]["keep"].tolist()) for epoch in range(8)}
    assert len(masks) > 1  # the masked words change from epoch to epoch
    assert random_token_keep(2, 0.4, __import__("numpy").random.default_rng(0)).tolist() == [True, True]


def _teacher_tokens_by_open_clip(model, tokens):
    """The teacher's per-token joint features through open_clip's own forward_intermediates, then ln_final and
    text_projection."""
    out = model.forward_intermediates(text=tokens, text_indices=[len(model.transformer.resblocks) - 1],
                                      intermediates_only=True)
    return model.ln_final(out["text_intermediates"][0]) @ model.text_projection


def _student_tokens_alone(model, ids, positions):
    """One caption's kept tokens through the student's text modules by hand: no batch, no filler."""
    length = len(ids)
    causal = torch.full((length, length), float("-inf")).triu(1)
    x = model.token_embedding(ids[None]) + model.positional_embedding[positions][None]
    return model.ln_final(model.transformer(x, attn_mask=causal))[0] @ model.text_projection


def test_loss_equals_an_independent_recomputation_per_caption(tmp_path):
    recipe = TextDistillRecipe(_config(tmp_path))
    batch = _batch(recipe)
    with torch.no_grad():
        loss = recipe.loss(recipe.module, batch, torch.device("cpu"))
        teacher = recipe.text_teacher.model
        target = _teacher_tokens_by_open_clip(teacher, batch["tokens"])
        pooled = target[torch.arange(len(CAPTIONS)), batch["tokens"].argmax(1)]
        assert torch.allclose(pooled, teacher.encode_text(batch["tokens"]), atol=1e-5)  # EOT row = encode_text
        cosines = []
        for tokens, keep, wanted in zip(batch["tokens"], batch["keep"], target):
            positions = keep.nonzero()[:, 0]
            pred = _student_tokens_alone(recipe.clip, tokens[positions], positions)
            cosines.append(torch.nn.functional.cosine_similarity(pred, wanted[positions], dim=-1))
    expected = -torch.cat(cosines).mean()
    assert len(torch.cat(cosines)) == int(batch["keep"].sum())
    assert torch.allclose(loss, expected, atol=1e-6), (loss, expected)


def test_export_has_the_teachers_image_tower_and_the_students_text_tower(tmp_path):
    recipe = TextDistillRecipe(_config(tmp_path))
    with torch.no_grad():  # a trained-looking student: not its initial weights
        recipe.module.ln_final.weight.mul_(1.5)
    meta = recipe.export(tmp_path / "out", steps=0)
    assert meta["objective"] == "text-uta" and meta["backbone"]["spec"] == "clip:utabench-clip-world-small-text"
    exported, teacher = build_backbone(meta["backbone"]), recipe.text_teacher
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    tokens = exported.tokenize(["a photo of a circle.", "a star in the image."])
    assert torch.equal(tokens, teacher.tokenize(["a photo of a circle.", "a star in the image."]))
    with torch.no_grad():
        assert torch.allclose(exported.encode_image(images), teacher.encode_image(images), atol=1e-6)
        student = recipe.module(tokens)[torch.arange(2), tokens.argmax(1)]
        assert torch.allclose(exported.encode_text(tokens), student, atol=1e-5)
        assert not torch.allclose(exported.encode_text(tokens), teacher.encode_text(tokens), atol=1e-2)
    assert float(exported.model.logit_scale) == float(teacher.model.logit_scale)


@pytest.mark.parametrize("changes, message", [
    ({"model": None}, "objective text-uta needs `teacher`"),
    ({"model": "ViT-Q-99"}, "objective text-uta, model: unknown open_clip model config 'ViT-Q-99'"),
    ({"mask": {"type": "block-r", "ratio": 0.4}}, "masks words at random .*not block-r"),
    ({"mask": {"type": "random", "ratio": 1.5}}, "ratio"),
    ({"text_student": {"model": "x"}}, "text_student"),
])
def test_config_refusals(tmp_path, changes, message):
    with pytest.raises(UtabenchError, match=message) as info:
        _config(tmp_path, **changes)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("changes, message", [
    ({"model": "utabench-clip-tiny"}, "its image tower must be teacher clip:utabench-clip-world's"),
    ({"teacher": {"spec": "uta:tiny"}}, "teacher uta:tiny cannot teach a text tower"),
])
def test_recipe_refusals(tmp_path, changes, message):
    with pytest.raises(UtabenchError, match=message) as info:
        TextDistillRecipe(_config(tmp_path, **changes))
    assert "\n" not in str(info.value)


def _record(backbone, top1, **pretrain):
    row = {"backbone": backbone, "task": "zeroshot-classification", "dataset_type": "imagenet", "status": "complete",
           "provenance.backbone.checkpoint": f"/{backbone}.safetensors", "metrics.top1": top1}
    row.update({f"pretrain.{k}": v for k, v in pretrain.items()})
    return row


def _frame(student_top1, paper=True):
    text = {"objective": "text-uta", "teacher": "/teacher.safetensors"}
    if paper:
        text.update({"paper.table": 10, "paper.row": "UTA text encoder"})
    return pd.DataFrame([_record("teacher", 80.0, objective="clip"),
                         _record("uta", 76.0, objective="uta", teacher="/teacher.safetensors"),
                         _record("text-student", student_top1, **text)])


def _cells(line):
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_table10_gives_the_student_text_tower_beside_the_teachers_with_the_published_row():
    out = render(_frame(60.0), tables=[10], with_paper=False)
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| text-student "))
    assert _cells(lines[at]) == ["text-student", "teacher", "80.0", "60.0", "75.0"]
    assert _cells(lines[at + 1]) == ["↳ paper: UTA text encoder", "", "—", "54.5", "—"]
    assert _cells(lines[at + 2]) == ["↳ Δ (ours − paper)", "", "—", "+5.5", "—"]
    assert "| uta " not in out  # image students are Table 6's
    miniature = render(_frame(60.0, paper=False), tables=[10], with_paper=False)
    assert "↳ paper" not in miniature and "| text-student " in miniature
    assert "| text-student " not in render(_frame(60.0), tables=[6], with_paper=False)


def test_the_papers_config(monkeypatch):
    """configs/pretrain/table10-text-uta.yaml: its published row, the EVA-01-CLIP teacher, uta-b14.yaml's optimiser."""
    monkeypatch.setenv("UTABENCH_CKPT", "/ckpt")
    monkeypatch.setenv("UTABENCH_DATA", "/data")
    cfg = load_pretrain_config(str(PRETRAIN / "table10-text-uta.yaml"))
    vision = load_pretrain_config(str(PRETRAIN / "uta-b14.yaml"))
    assert cfg["paper"] == {"table": 10, "row": "UTA text encoder"} and cfg["objective"] == "text-uta"
    assert cfg["teacher"]["spec"] == "clip:EVA01-g-14" and cfg["model"] == "EVA01-g-14-small-text"
    assert cfg["optim"]["epochs"] == 1 and cfg["mask"] == {**vision["mask"], "type": "random"}
    same = ("batch_size", "lr", "min_lr", "weight_decay", "betas", "eps", "clip_grad")
    assert {k: cfg["optim"][k] for k in same} == {k: vision["optim"][k] for k in same}


def test_the_shared_trainer_runs_it_and_the_export_loads(tmp_path):
    cfg = _config(tmp_path, optim={"batch_size": 3, "steps": 3, "warmup_steps": 1, "lr": 1e-3}, checkpoint_every=2,
                  threads=1)
    meta = pretrain(cfg, tmp_path / "run", progress=False, log=lambda line: None)
    assert meta["objective"] == "text-uta" and meta["steps"] == 3
    trained = build_backbone(meta["backbone"])
    initial = TextDistillRecipe(cfg).clip
    assert torch.equal(trained.model.visual.conv1.weight, initial.visual.conv1.weight)  # the teacher's, untouched
    assert not torch.equal(trained.model.transformer.resblocks[0].mlp.c_fc.weight,
                           initial.transformer.resblocks[0].mlp.c_fc.weight)  # the text tower trained
    assert pretrain(cfg, tmp_path / "run", progress=False, log=lambda line: None) == meta  # a finished run is reused
