"""The pretraining validation loss (paper A.3, Fig. 4): the config block is checked and enters the fingerprint only
when set; held-out images are never trained on; a logged point equals the loss recomputed directly on the same
model, views and masks; validation passes leave training untouched; a resumed run writes the same curve; the claim
and the report read the curve from the records."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import load_file

from utabench.backbones.factory import build_backbone
from utabench.core.errors import UtabenchError
from utabench.harness.claims import FAIL, NOT_RUN, PASS, VALIDATION_MIN_FALL, VALIDATION_SHARE_OF_TRAINING_FALL, check
from utabench.harness.record import Record
from utabench.harness.report import write_report
from utabench.harness.store import record_path, write_record
from utabench.pretrain.config import build_config, load_pretrain_config
from utabench.pretrain.data import PretrainImages, index_source, split_holdout
from utabench.pretrain.run import build_recipe, pretrain
from utabench.training.fingerprint import run_fingerprint, training_fields
from utabench.training.trainer import Trainer

PRETRAIN = Path(__file__).resolve().parents[1] / "utabench" / "configs" / "pretrain"
TEACHER = {"spec": "clip:utabench-clip-world", "seed": 1}
HOLDOUT = 8
CLAIM = "validation loss falls with the training loss"


def _raw(world, **over):
    raw = {"objective": "uta", "student": {"model": "world", "drop_path": 0.1}, "teacher": TEACHER,
           "data": {"type": "imagefolder", "root": str(world / "imagenet" / "train")},
           "mask": {"type": "block-r", "ratio": 0.5, "min_block": 4},
           "optim": {"batch_size": 8, "steps": 6, "warmup_steps": 2, "lr": 1e-3}, "checkpoint_every": 3,
           "workers": 0, "validation": {"holdout": HOLDOUT, "every": 2, "batch_size": 3}}
    raw.update(over)
    return raw


def _cfg(world, **over):
    return build_config(_raw(world, **over))


def _points(out):
    """The validation points of a run's log, without the seconds they took."""
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows if "validation_loss" in row]


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("uta-val")
    meta = pretrain(_cfg(world), out, progress=False, log=lambda _: None)
    return out, meta


@pytest.fixture(autouse=True)
def _paths(monkeypatch):
    monkeypatch.setenv("UTABENCH_CKPT", "/ckpt")
    monkeypatch.setenv("UTABENCH_DATA", "/data")


def test_the_block_is_checked(world):
    cfg = _cfg(world)
    assert cfg["validation"] == {"holdout": HOLDOUT, "every": 2, "batch_size": 3,  # the paper's masks by default
                                 "mask": {"type": "random", "ratio": 0.5, "min_block": 16, "min_aspect": 0.3,
                                          "reverse_prob": 0.5}}
    for bad, message in (({"holdout": 8, "evry": 2}, "unknown key 'evry'; did you mean 'every'"),
                         ({"holdout": 8, "mask": {"ratio": 1.5}}, "validation.mask.ratio"),
                         ({"holdout": 8, "mask": {"type": "checker"}}, "validation.mask.type"),
                         ({"every": 2}, "validation.holdout"), ({"holdout": 0}, "validation.holdout")):
        with pytest.raises(UtabenchError, match=re.escape(message)):
            _cfg(world, validation=bad)
    with pytest.raises(UtabenchError, match="validation applies to distillation"):
        build_config({"objective": "clip", "model": "utabench-clip-world", "data": {"type": "imagefolder",
                      "root": "x"}, "validation": {"holdout": 8}})
    with pytest.raises(UtabenchError, match="validation holdout of 40 images leaves nothing to train on"):
        build_recipe(_cfg(world, validation={"holdout": 40}))


def test_the_fingerprint_changes_only_with_the_block(world):
    """Absent, the block leaves every fingerprint as it was (the pinned values of test_pretrain_configs too);
    present, it changes it, and so does each of its settings."""
    plain = load_pretrain_config(str(PRETRAIN / "uta-b14.yaml"))
    assert plain["validation"] is None and not any(k.startswith("validation") for k in training_fields(plain))
    assert run_fingerprint(load_pretrain_config(str(PRETRAIN / "table6-uta.yaml"))) == "89b281c7d1aae2ee"
    paper = load_pretrain_config(str(PRETRAIN / "uta-b14-val.yaml"))
    assert paper["validation"]["mask"]["type"] == "random" and paper["validation"]["mask"]["ratio"] == 0.5
    assert {k: v for k, v in paper.items() if k != "validation"} == {k: v for k, v in plain.items()
                                                                    if k != "validation"}
    assert run_fingerprint(paper) != run_fingerprint(plain)
    without = _raw(world)
    del without["validation"]
    prints = {run_fingerprint(build_config(without)), run_fingerprint(_cfg(world))}
    for change in ({"holdout": 9}, {"every": 3}, {"mask": {"ratio": 0.4}}):
        prints.add(run_fingerprint(_cfg(world, validation={**_raw(world)["validation"], **change})))
    assert len(prints) == 5
    world_val = load_pretrain_config(str(PRETRAIN / "world-student-val.yaml"))
    assert world_val["validation"]["holdout"] == 300 and world_val["objective"] == "uta"


def test_the_world_miniature_config_loads(tmp_path):
    """configs/world-validation.yaml: the world's UTA student with 10% held out, checked without training."""
    from utabench.core.configfile import bundled_config
    from utabench.core.context import RunContext
    from utabench.harness.config import load_config
    from utabench.pretrain.resolve import PretrainedResolver

    cfg = load_config(str(bundled_config("world-validation.yaml")))
    assert [b.get("pretrain") for b in cfg.backbones] == ["world-student-val.yaml"] and cfg.tasks and not cfg.notes
    resolver = PretrainedResolver(RunContext(device="cpu", cache_dir=tmp_path), Path("/w"), log=lambda _: None)
    student = resolver.config_for(cfg.backbones[0], train_teacher=False)
    plain = resolver.config_for({"pretrain": "world-student.yaml"}, train_teacher=False)
    assert student["validation"]["holdout"] == 300 and student["data"]["root"] == "/w/imagenet/train"
    assert {k: v for k, v in student.items() if k not in ("validation", "teacher_cache")} == {
        k: v for k, v in plain.items() if k not in ("validation", "teacher_cache")}


def test_held_out_images_are_never_trained_on(world, tmp_path):
    cfg = _cfg(world)
    every = [r.source for r in index_source(cfg["data"])]
    recipe = build_recipe(cfg)
    trained = [r.source for r in recipe.dataset.records]
    held = [r.source for r in recipe.validation_set.images.records]
    assert len(held) == HOLDOUT and not set(held) & set(trained) and sorted(held + trained) == sorted(every)
    assert held == [r.source for r in split_holdout(index_source(cfg["data"]), HOLDOUT, 0)[1]]  # seeded: the same
    assert held != [r.source for r in split_holdout(index_source(cfg["data"]), HOLDOUT, 1)[1]]
    seen = []
    loss = recipe.loss

    def spy(model, batch, device):
        seen.extend(recipe.dataset.records[int(i)].source for i in batch["index"])
        return loss(model, batch, device)
    recipe.loss = spy
    Trainer(cfg, recipe, tmp_path, progress=False, log=lambda _: None).run()
    assert len(seen) == 6 * 8 and not set(seen) & set(held)


def _direct_loss(cfg, model_state, images):
    """The validation loss at a step, computed without the trainer or the recipe's loss: the student with the
    checkpoint's weights, the teacher, and -cos over CLS + kept tokens, averaged per image."""
    from utabench.pretrain.objectives import OBJECTIVES
    from utabench.pretrain.student import Student

    student = Student("world", OBJECTIVES.get("uta"))
    student.load_state_dict(model_state)
    student.eval()
    teacher = build_backbone(TEACHER)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in teacher.normalisation())
    mean_s, std_s = (torch.tensor(v).view(1, 3, 1, 1) for v in (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD))
    losses = []
    with torch.no_grad():
        for item in images:
            x, mask = item["image"][None], item["mask"][None]
            target = teacher.joint_tokens((x - mean) / std)
            keep = torch.nonzero(~mask[0])[:, 0][None]
            pred = student((x - mean_s) / std_s, keep=keep)
            aligned = torch.cat([target[:, :1], target[:, 1:][:, keep[0]]], dim=1)
            losses.append(-F.cosine_similarity(pred, aligned, dim=-1).mean())
    return float(torch.stack(losses).mean())


def test_a_point_equals_the_loss_recomputed_directly(world, finished):
    out, meta = finished
    points = _points(out)
    assert [p["step"] for p in points] == [0, 2, 4, 6] and points[0]["train_loss"] is None
    assert meta["validation"] == {"steps": [0, 2, 4, 6], "loss": [round(p["validation_loss"], 6) for p in points],
                                  "train_loss": [None] + [round(p["train_loss"], 6) for p in points[1:]]}
    cfg = _cfg(world)
    held = split_holdout(index_source(cfg["data"]), HOLDOUT, 0)[1]
    from utabench.pretrain.masking import MaskGenerator, MaskSpec

    data = cfg["data"]
    views = PretrainImages(held, 48, 0, data["scale"], data["hflip"], MaskGenerator((6, 6), MaskSpec("random", 0.5)),
                           data["ratio"])
    images = [views[(i, 0)] for i in range(HOLDOUT)]
    assert all(int(item["mask"].sum()) == 18 for item in images)  # random, ratio 0.5 of the 6 x 6 grid
    assert all(torch.equal(item["mask"], views[(i, 0)]["mask"]) for i, item in enumerate(images))  # fixed
    state = torch.load(out / "checkpoints" / "step-00000006.pt", weights_only=True)
    assert _direct_loss(cfg, state["model"], images) == pytest.approx(points[-1]["validation_loss"], abs=2e-6)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4, 6, 6]  # the points, then the training line of step 6 (the log's last line stays one)


def test_validation_passes_leave_training_untouched(world, finished, tmp_path):
    """Another validation schedule (other points, other batches) trains the same weights: the passes draw from no
    global RNG and change no state."""
    out, _ = finished
    pretrain(_cfg(world, validation={"holdout": HOLDOUT, "every": 5, "batch_size": 8}), tmp_path, progress=False,
             log=lambda _: None)
    a, b = load_file(out / "final.safetensors"), load_file(tmp_path / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p["step"] for p in _points(tmp_path)] == [0, 5, 6]
    first = {p["step"]: p["validation_loss"] for p in _points(out)}
    again = {p["step"]: p["validation_loss"] for p in _points(tmp_path)}
    assert again[0] == pytest.approx(first[0], abs=1e-6) and again[6] == pytest.approx(first[6], abs=1e-6)


def test_a_resumed_run_writes_the_same_curve(world, finished, tmp_path):
    out, meta = finished
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(out / "checkpoints" / "step-00000003.pt", tmp_path / "checkpoints")  # mid-window: step 3 of (2, 4]
    shutil.copy(out / "log.jsonl", tmp_path / "log.jsonl")  # as a run killed after its last line would leave it
    logs = []
    resumed = pretrain(_cfg(world), tmp_path, progress=False, log=logs.append)
    assert any("resuming" in line and "step 3" in line for line in logs)
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 2, 4, 6, 6]  # the points up to step 3 kept, none twice
    assert _points(tmp_path) == _points(out) and resumed["validation"] == meta["validation"]


def test_the_records_carry_the_curve(world, finished, tmp_path):
    """run-all's `pretrain` info of a resolved backbone holds the curve, compactly."""
    import yaml

    from utabench.core.context import RunContext
    from utabench.pretrain.resolve import PretrainedResolver

    out, meta = finished
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in meta["config"].items() if v is not None}))
    ctx = RunContext(device="cpu", cache_dir=tmp_path / "cache", progress=False)
    shutil.copytree(out, ctx.cache_dir / "pretrain" / f"uta-{meta['fingerprint']}")  # the cached run: no training
    resolved = PretrainedResolver(ctx, None, log=lambda _: None).resolve_entry({"pretrain": str(config)})
    assert resolved["pretrain"]["validation"] == {"holdout": HOLDOUT, "mask": "random 0.5", **meta["validation"]}


def _curve_record(results, backbone, loss, train_loss, steps=(0, 100, 200, 300)):
    pretrain_info = {"objective": "uta", "validation": {"holdout": 300, "mask": "random 0.5", "steps": list(steps),
                                                        "loss": loss, "train_loss": train_loss}}
    write_record(record_path(results, backbone, "zeroshot-classification", "imagenet"), Record.from_dict({
        "status": "complete", "backbone": backbone, "task": "zeroshot-classification", "dataset": "imagenet",
        "dataset_type": "imagenet", "metrics": {"top1": 80.0}, "pretrain": pretrain_info, "provenance": {}}))


def _verdicts(results):
    from utabench.harness.store import load_results

    return {v.claim: v for v in check(load_results(results)) if CLAIM in v.claim}


def test_the_claim_passes_fails_and_is_not_run(tmp_path):
    """From the second point after step 0 (the first point's training mean lags it), the validation loss must fall
    by VALIDATION_MIN_FALL and by VALIDATION_SHARE_OF_TRAINING_FALL of the training loss's fall."""
    assert VALIDATION_MIN_FALL == 0.02 and VALIDATION_SHARE_OF_TRAINING_FALL == 0.5  # the figures below assume them
    results = tmp_path / "r"
    first = ([-0.05, -0.80], [None, -0.60])  # step 0, then a first window that lags its point: not compared
    for name, loss, train in (("falls", [-0.85, -0.90], [-0.84, -0.90]),
                              ("overfits", [-0.85, -0.84], [-0.84, -0.90]),  # training falls, validation rises
                              ("flat", [-0.85, -0.86], [-0.84, -0.845]),  # both barely fall
                              ("lags", [-0.85, -0.875], [-0.84, -0.94])):  # validation falls a quarter as much
        _curve_record(results, name, first[0] + loss, first[1] + train)
    _curve_record(results, "short", [-0.05, -0.80, -0.85], [None, -0.60, -0.84], steps=(0, 100, 200))
    verdicts = _verdicts(results)
    assert {name: v.status for name, v in verdicts.items()} == {
        f"falls: {CLAIM}": PASS, f"overfits: {CLAIM}": FAIL, f"flat: {CLAIM}": FAIL, f"lags: {CLAIM}": FAIL,
        f"short: {CLAIM}": NOT_RUN}
    assert verdicts[f"falls: {CLAIM}"].detail == (
        "validation loss -0.8500 at step 200 -> -0.9000 at step 300, fell 0.0500 >= max(0.02, 0.5 x the training "
        "loss's fall -0.8400 -> -0.9000 = 0.0600) = 0.0300 (margin +0.0200)")
    assert verdicts[f"lags: {CLAIM}"].detail.endswith("= 0.0500 (margin -0.0250)")
    empty = tmp_path / "e"
    write_record(record_path(empty, "plain", "zeroshot-classification", "imagenet"), Record.from_dict({
        "status": "complete", "backbone": "plain", "task": "zeroshot-classification", "dataset": "imagenet",
        "dataset_type": "imagenet", "metrics": {"top1": 80.0}, "pretrain": {"objective": "uta"}, "provenance": {}}))
    assert {name: v.status for name, v in _verdicts(empty).items()} == {CLAIM: NOT_RUN}
    assert {v.claim: v.status for v in check(pd.DataFrame()) if CLAIM in v.claim} == {CLAIM: NOT_RUN}  # no records


def test_the_report_draws_both_curves(tmp_path):
    results = tmp_path / "r"
    _curve_record(results, "uta-student-val", [-0.05, -0.80, -0.85, -0.88], [None, -0.60, -0.84, -0.90])
    text = write_report(results, tmp_path / "report.html").read_text()
    section = text.split("<h2>Pretraining: training and validation loss (paper Fig. 4)</h2>")[1].split("<h2>")[0]
    assert "<h3>uta-student-val</h3>" in section and section.count('<img alt="plot"') == 1


@pytest.mark.slow
def test_torchrun_validation_equals_single_process(world, tmp_path):
    """Under torchrun each rank scores every other validation batch and the sums are added: the curve of 2 ranks
    is the curve of one process (to float rounding; the weights themselves agree to 1e-4, test_distributed)."""
    import os
    import subprocess
    import sys

    import yaml

    config = tmp_path / "pretrain.yaml"
    raw = _raw(world, optim={"batch_size": 8, "steps": 4, "warmup_steps": 1, "lr": 1e-3},
               validation={"holdout": HOLDOUT, "every": 2, "batch_size": 3})
    raw["student"]["drop_path"] = 0.0  # DDP's ranks draw drop path from other RNG streams than one process
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "utabench.harness.cli", "pretrain", "uta", "--config", str(config), "--threads", "1", "--device",
              "cpu", "--no-progress"]
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, two = _points(tmp_path / "one"), _points(tmp_path / "two")
    assert [p["step"] for p in one] == [p["step"] for p in two] == [0, 2, 4]
    assert [p["validation_loss"] for p in two] == pytest.approx([p["validation_loss"] for p in one], abs=1e-4)
