"""Detection (COCO, LVIS) and segmentation (ADE20K) end to end on the small world through the CLI, evaluation of a
fine-tuned checkpoint, and the bad inputs of dense transfer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utabench.dense.recipe import load_recipe
from utabench.harness.cli import main
from utabench.harness.store import load_results, read_record

RUNS = [("detection", "coco", "cascade_mask_rcnn_world_coco", ("box_ap", "mask_ap")),
        ("detection", "lvis", "cascade_mask_rcnn_world_lvis", ("box_ap", "mask_ap")),
        ("segmentation", "ade20k", "upernet_world_ade20k", ("mIoU",))]


def _run(world, results, task, dtype, recipe, *extra, backbone="uta:tiny"):
    return main(["run", task, "--backbone", backbone, "--dataset", f"{dtype}:{world / dtype}", "--recipe", recipe,
                 "--iters", "2", "--results", str(results), "--threads", "2", "--no-progress", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("task,dtype,recipe,keys", RUNS)
def test_dense_task_trains_evaluates_and_reevaluates(world, tmp_path, task, dtype, recipe, keys, capfd):
    assert _run(world, tmp_path / "r", task, dtype, recipe, "--batch-size", "3", "--precision", "fp32") == 0
    out, err = capfd.readouterr()  # the result line alone: the libraries' prints and warnings are in console.log
    assert out.strip().splitlines() == [line for line in out.strip().splitlines() if line.startswith("[uta:tiny]")]
    assert "Warning" not in err and "Average Precision" not in out + err
    record = read_record(tmp_path / "r" / "uta_tiny" / task / f"{dtype}.json").to_dict()
    assert record["status"] == "complete" and all(k in record["metrics"] for k in keys)
    assert record["dataset_type"] == dtype  # as the entry names it (`coco` for detection reads coco-instances)
    # the record says how its numbers were made: the recipe's train and test batches, not --batch-size (evaluation's)
    cfg, stage = load_recipe(recipe), {"detection": "detector", "segmentation": "segmentor"}[task]
    assert record["provenance"]["training"] == {stage: {
        "batch_size": cfg.train_dataloader.batch_size, "precision": "fp32", "device": "cpu", "world_size": 1,
        "grad_accum": 1}}
    assert record["provenance"]["evaluation"]["batch_size"] == cfg.test_dataloader.batch_size != 3
    details = record["provenance"]["task_details"]
    assert details["schedule"]["iters"] == 2 and details["finetuned_checkpoint"].endswith("finetuned.pth")
    assert record["provenance"]["dataset"]["num_images"] == 4
    assert record["provenance"]["train_seconds"] > 0 and record["provenance"]["model_seconds"] > 0
    work = Path(details["work_dir"])  # only what --eval-only needs is kept: no resumable training state
    assert not list(work.glob("iter_*.pth")) and not (work / "last_checkpoint").exists()
    assert sorted(p.name for p in work.glob("*.pth")) == ["finetuned.pth"]
    assert (work / "console.log").is_file()
    # the fine-tuned checkpoint evaluates to the same numbers
    assert _run(world, tmp_path / "e", task, dtype, recipe, "--eval-only", details["finetuned_checkpoint"]) == 0
    again = read_record(tmp_path / "e" / "uta_tiny" / task / f"{dtype}.json")
    assert again.metrics == record["metrics"] and again.provenance["training"] == {}  # it trained nothing
    if task == "segmentation":  # each test image's areas kept: intervals over images
        assert set(record["ci"]) == {"mIoU", "mAcc", "aAcc"} and again.ci == record["ci"]
    assert not load_results(tmp_path / "r").empty


def test_missing_annotations(world, tmp_path, capsys):
    root = tmp_path / "coco"
    shutil.copytree(world / "coco", root)
    (root / "annotations" / "instances_val2017.json").unlink()
    code = main(["run", "detection", "--backbone", "uta:tiny", "--dataset", f"coco:{root}", "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "instances_val2017.json not found" in err[0]
    assert not (tmp_path / "r").exists()


def test_category_mismatch(world, tmp_path, capsys):
    root = tmp_path / "coco"
    shutil.copytree(world / "coco", root)
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        data = json.loads(path.read_text())
        data["categories"][0]["name"] = "person"
        path.write_text(json.dumps(data))
    code = _run(root.parent, tmp_path / "r", "detection", "coco", "cascade_mask_rcnn_world_coco")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "10 categories (person, square" in err[-1] and "expects 10 (circle, square" in err[-1]


def test_backbone_without_dense_features(world, tmp_path, capsys, monkeypatch):
    from utabench.backbones.base import Backbone, BackboneInfo
    from utabench.core.registry import BACKBONES

    class TextOnly(Backbone):
        def __init__(self, spec):
            super().__init__()
            self.info = BackboneInfo("text-only", spec.model, 0, 16, 224, 64, 2, 64, 0, True, "none")

        def image_transform(self):
            from torchvision import transforms

            return transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])

    BACKBONES.register("text-only")(TextOnly)
    try:  # registered for this test only: other tests list the known families
        code = _run(world, tmp_path / "r", "segmentation", "ade20k", "upernet_world_ade20k", backbone="text-only:x")
    finally:
        BACKBONES.remove("text-only")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "text-only:x cannot give dense features" in err[-1] and "no ViT image tower" in err[-1]


def test_patch_size_the_pyramid_cannot_use(world, tmp_path, capsys):
    config = json.loads((__import__("utabench").backbones.uta.CONFIG_DIR / "tiny.json").read_text())
    config["vision"].update(image_size=48, patch_size=12, pt_seq_len=4)
    path = tmp_path / "patch12.json"
    path.write_text(json.dumps(config))
    code = _run(world, tmp_path / "r", "detection", "coco", "cascade_mask_rcnn_world_coco", backbone=f"uta:{path}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "patch size 12 gives feature strides 6, 12, 24" in err[-1]
    assert not list((tmp_path / "r").glob("*/*/*.json"))


@pytest.mark.slow
def test_killed_fine_tuning_resumes_from_its_last_checkpoint(world, tmp_path):
    """A fine-tuning process killed mid-run (SIGKILL, no clean-up) leaves no record; the rerun resumes at the
    iteration after the last checkpoint it wrote and finishes the schedule."""
    base = Path(__import__("utabench").__file__).parent / "configs" / "dense" / "upernet_world_ade20k.py"
    recipe = tmp_path / "every_iter.py"
    recipe.write_text(f"_base_ = [{str(base)!r}]\n"
                      "default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=1))\n"
                      "log_processor = dict(window_size=1)\n")
    results = tmp_path / "r"
    args = ["run", "segmentation", "--backbone", "uta:tiny", "--dataset", f"ade20k:{world / 'ade20k'}",
            "--recipe", str(recipe), "--iters", "40", "--results", str(results), "--threads", "1", "--no-progress"]
    work = results / "uta_tiny" / "segmentation" / "ade20k.work"
    proc = subprocess.Popen([sys.executable, "-m", "utabench.harness.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (work / "last_checkpoint").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    assert not (results / "uta_tiny" / "segmentation" / "ade20k.json").exists()
    done = int(Path((work / "last_checkpoint").read_text().strip()).stem.split("_")[1])
    assert 1 <= done < 40
    first_runs = set(work.glob("2*"))

    assert main(args) == 0
    record = read_record(results / "uta_tiny" / "segmentation" / "ade20k.json").to_dict()
    assert record["status"] == "complete" and record["provenance"]["task_details"]["finetuned_checkpoint"].endswith(
        "finetuned.pth")
    (rerun,) = set(work.glob("2*")) - first_runs
    logged = map(json.loads, (rerun / "vis_data" / "scalars.json").read_text().splitlines())
    steps = [scalars["step"] for scalars in logged if "loss" in scalars]
    assert steps == list(range(done + 1, 41))


@pytest.mark.slow
def test_fine_tuning_runs_on_two_processes_under_torchrun(world, tmp_path):
    """torchrun with 2 CPU processes (gloo): mmengine's pytorch launcher joins the process group utabench opened,
    the batch is 2 x the per-process batch (so `--iters 2` at the recipe's batch 4 becomes 1 step), one record."""
    results = tmp_path / "r"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "utabench.harness.cli", "run", "detection", "--backbone", "uta:tiny", "--dataset",
                          f"coco:{world / 'coco'}", "--recipe", "cascade_mask_rcnn_world_coco", "--iters", "2",
                          "--device", "cpu", "--results", str(results), "--threads", "1", "--no-progress"],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    record = read_record(results / "uta_tiny" / "detection" / "coco.json").to_dict()
    assert record["provenance"]["evaluation"]["world_size"] == 2
    assert record["provenance"]["training"]["detector"] == {"batch_size": 8, "precision": "fp32", "device": "cpu",
                                                            "world_size": 2, "grad_accum": 1}
    schedule = record["provenance"]["task_details"]["schedule"]
    assert (schedule["gpus"], schedule["batch"], schedule["iters"]) == (2, 8, 1)
    assert record["provenance"]["task_details"]["finetuned_checkpoint"].endswith("finetuned.pth")
    assert {"box_ap", "mask_ap"} <= set(record["metrics"])


def test_recipe_setups_are_the_loaders_batches_and_the_optimiser_wrappers_precision():
    from utabench.core.context import Setup
    from utabench.dense.recipe import evaluation_setup, load_recipe, training_setup, without_amp

    cfg = load_recipe("cascade_mask_rcnn_world_coco")  # train batch 4, test batch 1, AmpOptimWrapper float16
    assert training_setup(cfg, "cuda", 8) == Setup(32, "amp_fp16", "cuda", 8)
    assert evaluation_setup(cfg, "cuda", 8) == Setup(8, "fp32", "cuda", 8)
    cfg.optim_wrapper.update(dtype="bfloat16", accumulative_counts=2)
    assert training_setup(cfg, "cuda", 2) == Setup(16, "amp_bf16", "cuda", 2, 2)
    assert without_amp(cfg) and training_setup(cfg, "cpu", 1) == Setup(8, "fp32", "cpu", 1, 2)
    cfg.test_cfg["fp16"] = True
    assert evaluation_setup(cfg, "cuda", 1) == Setup(1, "amp_fp16", "cuda", 1)
    segmentation = load_recipe("upernet_world_ade20k")  # OptimWrapper: fp32
    assert training_setup(segmentation, "cuda", 1) == Setup(8, "fp32", "cuda", 1)


def test_checkpoints_record_the_setup_and_a_resume_reads_it_back():
    from utabench.core.context import Setup
    from utabench.dense.engine import make_setup_hook

    setup = Setup(32, "amp_fp16", "cuda", 8)
    hook = make_setup_hook(setup)
    assert hook.trained is None
    checkpoint = {"meta": {"iter": 10}}
    hook.before_save_checkpoint(None, checkpoint)
    assert checkpoint["meta"] == {"iter": 10, "setup": setup.to_dict()} and hook.trained == setup
    resumed = make_setup_hook(Setup(4, "fp32", "cpu", 1))  # resumed at the end: nothing trained, nothing saved
    resumed.after_load_checkpoint(None, checkpoint)
    assert resumed.trained == setup
    resumed.after_load_checkpoint(None, {"meta": {"iter": 10}})  # a checkpoint written before setups were recorded
    assert resumed.trained is None


@pytest.mark.slow
def test_a_real_fine_tuning_records_its_setup_in_its_checkpoints(world, tmp_path):
    """mmengine runs the setup hook: the fine-tuned checkpoint's meta holds the setup the task reports, and a rerun
    that resumes the finished fine-tuning (killed before its record) reports it from the checkpoint."""
    import torch

    from utabench.backbones.factory import build_backbone
    from utabench.core.context import RunContext, Setup
    from utabench.core.registry import TASKS

    task = TASKS.get("segmentation")()
    entry = {"name": "ade20k", "type": "ade20k", "root": str(world / "ade20k"), "recipe": "upernet_world_ade20k",
             "iters": 2}
    ctx = RunContext(device="cpu", batch_size=3, workers=0, cache_dir=tmp_path / "cache", progress=False,
                     work_dir=tmp_path / "work")
    backbone, data, options = build_backbone("uta:tiny"), task.load(entry), task.options_of(entry)
    out = task.run(backbone, data, ctx, options)
    expected = Setup(8, "fp32", "cpu", 1)
    assert out.training == {"segmentor": expected} and out.evaluation == Setup(1, "fp32", "cpu", 1)
    meta = torch.load(out.details["finetuned_checkpoint"], map_location="cpu", weights_only=True)["meta"]
    assert meta["setup"] == expected.to_dict()
    (ctx.work_dir / "finetuned.pth").unlink()  # as if killed after training, before the record: resumed at the end
    assert task.run(backbone, data, ctx, options).training == {"segmentor": expected}
