"""Extending utabench from outside it, with no change to utabench's files: a plugin module (tests/plugins/toy_task.py)
adds a task, a dataset type and a table; `utabench run` gets the task's own flags from its schemas, runs it end to
end, and `utabench tables` renders the table. Another (tests/plugins/plain_vit.py) adds a backbone family, a
hand-written ViT that brings its own trunk: detection and fine-tuning run on it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"


def _cli(*args, tmp_path, plugins="toy_task"):
    env = {**os.environ, "UTABENCH_PLUGINS": plugins, "PYTHONPATH": str(PLUGINS),
           "UTABENCH_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "utabench.harness.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_plugin_task_runs_through_the_cli(tmp_path, world):
    helped = _cli("run", "embedding-norm", "--help", tmp_path=tmp_path)
    assert helped.returncode == 0 and "--limit LIMIT" in helped.stdout and "--normalise" in helped.stdout
    assert "--recipe" not in helped.stdout  # only this task's options
    folder = world / "imagenet" / "val" / sorted(os.listdir(world / "imagenet" / "val"))[0]
    results = tmp_path / "r"
    run = _cli("run", "embedding-norm", "--backbone", "clip:utabench-clip-tiny", "--dataset", f"flat-folder:{folder}",
               "--limit", "3", "--normalise", "true", "--results", str(results), "--threads", "2", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(next(results.glob("*/embedding-norm/flat-folder.json")).read_text())
    assert record["metrics"]["mean_norm"] == 1.0 or abs(record["metrics"]["mean_norm"] - 1.0) < 1e-5
    assert record["provenance"]["dataset"]["num_images"] == 3 and record["provenance"]["dataset"]["fingerprint"]
    bad = _cli("run", "embedding-norm", "--backbone", "clip:utabench-clip-tiny", "--dataset", f"flat-folder:{folder}",
               "--limit", "0", "--results", str(results), tmp_path=tmp_path)
    assert bad.returncode == 2 and "limit: Input should be greater than 0" in bad.stderr
    tables = _cli("tables", "--results", str(results), "--table", "90", "--no-paper", tmp_path=tmp_path)
    assert tables.returncode == 0 and "### Table 90" in tables.stdout and "1.0" in tables.stdout
    # the plugin's dataset type, read by utabench's own zero-shot task
    run = _cli("run", "zeroshot-classification", "--backbone", "clip:utabench-clip-tiny", "--dataset",
               f"class-folder:{world / 'imagenet' / 'val'}", "--results", str(results), "--threads", "2",
               tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(next(results.glob("*/zeroshot-classification/class-folder.json")).read_text())
    assert record["dataset_type"] == "class-folder" and 0.0 <= record["metrics"]["top1"] <= 100.0


@pytest.mark.slow
def test_a_plugin_backbone_family_runs_detection_and_fine_tuning(tmp_path, world):
    recipe = tmp_path / "finetune.yaml"  # a few steps of the fine-tuning recipe
    recipe.write_text(json.dumps({"objective": "finetune", "layer_decay": 0.75, "ema": 0.9, "checkpoint_every": 1,
                                  "workers": 0, "drop_path": 0.0, "augment": {"scale": [0.5, 1.0]},
                                  "optim": {"batch_size": 8, "steps": 3, "warmup_steps": 1, "lr": 1e-3,
                                            "min_lr": 1e-6, "betas": [0.9, 0.999], "eps": 1e-8,
                                            "weight_decay": 0.05},
                                  "eval": {"crop_pct": 1.0}}))
    runs = {"detection": (["--dataset", f"coco:{world / 'coco'}", "--recipe", "cascade_mask_rcnn_world_coco",
                           "--iters", "2"], "coco", {"box_ap", "mask_ap"}),
            "finetune-classification": (["--dataset", f"imagenet:{world / 'imagenet'}", "--classes",
                                         str(world / "classes.json"), "--recipe", str(recipe)], "imagenet",
                                        {"top1", "top5"})}
    results = tmp_path / "r"
    for task, (args, dataset, keys) in runs.items():
        run = _cli("run", task, "--backbone", "plain-vit:tiny", *args, "--results", str(results), "--threads", "2",
                   "--no-progress", tmp_path=tmp_path, plugins="plain_vit")
        assert run.returncode == 0, run.stderr[-3000:]
        record = json.loads(next(results.glob(f"*/{task}/{dataset}.json")).read_text())
        assert record["status"] == "complete" and record["backbone"] == "plain-vit:tiny"
        assert keys <= set(record["metrics"]) and all(math.isfinite(v) for v in record["metrics"].values())
        assert record["provenance"]["train_seconds"] > 0
    for task, (args, dataset, _) in runs.items():  # a tower narrower than its info says: refused before training
        bad = _cli("run", task, "--backbone", "plain-vit:misshapen", *args, "--results", str(tmp_path / "bad"),
                   "--no-progress", tmp_path=tmp_path, plugins="plain_vit")
        purpose = "give dense features" if task == "detection" else "be fine-tuned for classification"
        assert bad.returncode == 2, bad.stderr[-3000:]
        assert bad.stderr.strip().splitlines() == [
            f"utabench: error: plain-vit:misshapen cannot {purpose}: its tower has width 32 (its info says 64)"]
