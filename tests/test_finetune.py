"""ImageNet fine-tuning (FT-CLIP recipe): the head and the layer-decay groups against the recipe's formulas, the
augmentation against timm's own for the recipe's string, exact resume after a kill at a random step, the task end to
end through the CLI (EMA and raw accuracy, evaluation of the exported weights, Table 4's FT column)."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from utabench.backbones import build_backbone
from utabench.finetune.config import load_finetune_recipe
from utabench.finetune.data import seeded
from utabench.finetune.model import Classifier
from utabench.finetune.recipe import FinetuneRecipe, posterize, train_transform
from utabench.harness.cli import main
from utabench.training.trainer import Trainer


def _samples(world):
    root = world / "imagenet" / "train"
    wnids = sorted(p.name for p in root.iterdir())
    return [(p, wnids.index(p.parent.name)) for p in sorted(root.rglob("*.JPEG"))], len(wnids)


@pytest.mark.parametrize("spec", ["uta:tiny", "clip:utabench-clip-tiny"])
def test_layer_decay_groups_follow_the_formula(spec):
    """lr scale = decay ** (depth + 1 - layer): embeddings 0, block i -> i + 1, the norm and head depth + 1; no
    weight decay on biases, norms, position embeddings and class tokens."""
    backbone = build_backbone(spec)
    recipe = {**load_finetune_recipe("ftclip-b16"), "seed": 0}
    model = Classifier(backbone, 10)
    optimizer = FinetuneRecipe.build_optimizer(type("R", (), {"cfg": recipe})(), model)
    depth, decay = backbone.info.depth, recipe["layer_decay"]
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            seen.add(name)
            if ".blocks." in name or ".resblocks." in name:
                layer = int(name.split("blocks.")[1].split(".")[0]) + 1
            elif name.startswith(("tower.cls_token", "tower.pos_embed", "tower.patch_embed", "tower.class_embedding",
                                  "tower.positional_embedding", "tower.conv1", "tower.ln_pre")):
                layer = 0
            else:
                layer = depth + 1
            assert group["lr_scale"] == pytest.approx(decay ** (depth + 1 - layer)), name
            no_decay = param.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "class_embedding",
                                                          "positional_embedding"))
            assert group["weight_decay"] == (0.0 if no_decay else recipe["optim"]["weight_decay"]), name
    assert seen == set(names.values())


def test_head_is_a_layernorm_on_the_mean_patch_token_then_a_small_linear():
    backbone = build_backbone("uta:tiny")
    torch.manual_seed(0)
    model = Classifier(backbone, 10, head_init_scale=0.001).eval()
    assert model.head.weight.std() < 0.02 * 0.001 * 1.5 and torch.equal(model.head.bias, torch.zeros(10))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        patches = backbone.token_features(images, [-1])[0][:, backbone.info.num_prefix_tokens:]
        expected = model.head(torch.nn.functional.layer_norm(patches.mean(1), (64,), model.fc_norm.weight,
                                                             model.fc_norm.bias, 1e-6))
        torch.testing.assert_close(model(images), expected)
    assert all(not p.requires_grad for p in backbone.parameters())  # the evaluated backbone is untouched


def test_augmentation_is_timms_for_the_recipes_string():
    from timm.data import create_transform

    recipe = load_finetune_recipe("ftclip-b16")
    ours = train_transform(recipe, 224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    theirs = create_transform(224, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25,
                              re_mode="pixel", re_count=1, interpolation="bicubic",
                              mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    assert repr(ours) == repr(theirs)
    assert any(type(t).__name__ == "RandAugment" for t in ours.transforms)
    assert any(type(t).__name__ == "RandomErasing" for t in ours.transforms)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 300, 3), dtype=np.uint8))
    for seed in range(20):  # the same draws give the same pixels (where timm's own posterize does not fail)
        outputs = []
        for transform in (ours, theirs):
            with seeded(seed):
                try:
                    outputs.append(transform(image))
                except ValueError:  # Pillow >= 13 refuses timm's 0-bit posterize: ours must not
                    outputs.append(None)
        assert outputs[0] is not None
        assert outputs[1] is None or torch.equal(outputs[0], outputs[1]), seed


def test_posterize_to_zero_bits_gives_a_black_image_as_before_pillow_13():
    from timm.data.auto_augment import rand_augment_transform

    ops = rand_augment_transform("rand-m10-n1-inc1", {}).ops
    posterize_op = next(op for op in ops if op.name == "PosterizeIncreasing")
    assert posterize_op.aug_fn is not posterize  # timm's own; ours replaces it in train_transform
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    assert posterize(image, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert posterize(image, 1).getpixel((0, 0)) == (128, 0, 0) and posterize(image, 8) is image
    recipe = load_finetune_recipe("ftclip-b16")
    transform = train_transform(recipe, 32, (0.5,) * 3, (0.5,) * 3)
    swapped = [op for t in transform.transforms for op in getattr(t, "ops", ()) if op.name == "PosterizeIncreasing"]
    assert swapped and all(op.aug_fn is posterize for op in swapped)


def _recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    recipe = {"objective": "finetune", "layer_decay": 0.75, "ema": 0.9, "checkpoint_every": 1, "workers": 0,
              "optim": {"batch_size": 8, "steps": 5, "warmup_steps": 2, "lr": 1e-3, "min_lr": 1e-6,
                        "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05},
              "augment": {"scale": [0.5, 1.0]}, "eval": {"crop_pct": 1.0}, "drop_path": 0.1}
    path.write_text(json.dumps(recipe))
    return str(path)


def _train(world, recipe_path, out, kill_after=None):
    samples, classes = _samples(world)
    cfg = {**load_finetune_recipe(recipe_path), "backbone": {"spec": "uta:tiny"}}
    recipe = FinetuneRecipe(cfg, build_backbone("uta:tiny"), samples, classes)
    if kill_after is not None:  # dies during the step after `kill_after` (its checkpoint is the last one written)
        update = recipe.after_step

        def after_step(step):
            if step > kill_after:
                raise KeyboardInterrupt
            update(step)
        recipe.after_step = after_step
    Trainer(cfg, recipe, out, progress=False, log=lambda _: None).run()
    return load_file(str(out / "finetuned.safetensors"))


def test_killed_fine_tuning_resumes_bit_identically(world, tmp_path):
    straight = _train(world, _recipe(tmp_path), tmp_path / "a")
    step = random.Random(7).randint(1, 4)
    with pytest.raises(KeyboardInterrupt):
        _train(world, _recipe(tmp_path), tmp_path / "b", kill_after=step)
    assert not (tmp_path / "b" / "finetuned.safetensors").exists()
    resumed = _train(world, _recipe(tmp_path), tmp_path / "b")  # the same command again: it resumes
    assert straight.keys() == resumed.keys() and any(k.startswith("ema.") for k in straight)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)  # raw and EMA weights


def test_finetune_task_end_to_end(world, tmp_path, capsys):
    results = tmp_path / "r"
    args = ["run", "finetune-classification", "--backbone", "uta:tiny", "--dataset", f"imagenet:{world / 'imagenet'}",
            "--classes", str(world / "classes.json"), "--recipe", _recipe(tmp_path), "--results", str(results),
            "--cache-dir", str(tmp_path / "cache"), "--threads", "2", "--no-progress", "--paper", "UTA B/14@224 0B"]
    assert main(args) == 0
    record = json.loads(next(results.glob("*/finetune-classification/imagenet.json")).read_text())
    metrics, details = record["metrics"], record["provenance"]["task_details"]
    assert {"top1", "top5", "top1_raw", "top5_raw"} <= set(metrics) and details["shown"] == "ema"
    assert details["train_images"] == 40 and details["steps"] == 5 and record["provenance"]["train_seconds"] > 0
    weights = details["finetuned"]
    assert main(args[:-2] + ["--eval-only", weights, "--results", str(tmp_path / "e")]) == 0  # the export evaluates
    again = json.loads(next((tmp_path / "e").glob("*/finetune-classification/imagenet.json")).read_text())
    assert again["metrics"] == metrics
    assert set(record["ci"]) == set(metrics) and again["ci"] == record["ci"]  # intervals from each image's hits
    assert all(low <= metrics[m] <= high for m, (low, high) in record["ci"].items())
    capsys.readouterr()
    assert main(["tables", "--results", str(results), "--table", "4"]) == 0
    table = capsys.readouterr().out
    assert "IN-1K FT" in table and "↳ paper: UTA B 86M" not in table
    row = next(line for line in table.splitlines() if line.startswith("| uta:tiny"))
    assert f"{metrics['top1']:.1f}" in row and "87.5" in table  # ours, and UTA B's published FT beneath


def test_a_training_split_with_other_classes_is_refused(world, tmp_path, capsys):
    train = tmp_path / "train"
    shutil.copytree(world / "imagenet" / "train", train)
    (train / "n99999999").mkdir()
    assert main(["run", "finetune-classification", "--backbone", "uta:tiny", "--dataset",
                 f"imagenet:{world / 'imagenet'}", "--classes", str(world / "classes.json"), "--train", str(train),
                 "--recipe", "world", "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 2
    assert "folders n99999999 are not classes of imagenet" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_fine_tuning_equals_single_process(world, tmp_path):
    """DDP over 2 gloo processes (half of each batch apiece) fine-tunes the weights one process does (no drop path:
    its draws differ per rank), and both evaluate to the same record."""
    import os
    import subprocess
    import sys

    recipe = json.loads(open(_recipe(tmp_path)).read())
    recipe["drop_path"] = 0.0
    (tmp_path / "nodp.yaml").write_text(json.dumps(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "utabench.harness.cli", "run", "finetune-classification", "--backbone", "uta:tiny", "--dataset",
              f"imagenet:{world / 'imagenet'}", "--classes", str(world / "classes.json"), "--recipe",
              str(tmp_path / "nodp.yaml"), "--threads", "1", "--device", "cpu", "--no-progress"]
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                                 "2"])):
        run = subprocess.run([sys.executable, *launcher, *common, "--results", str(tmp_path / name),
                              "--cache-dir", str(tmp_path / f"cache-{name}")],
                             env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
    one = load_file(str(next((tmp_path / "cache-one" / "finetune").rglob("finetuned.safetensors"))))
    two = load_file(str(next((tmp_path / "cache-two" / "finetune").rglob("finetuned.safetensors"))))
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5), key


def test_the_task_reports_the_setup_its_model_was_fine_tuned_with(world, tmp_path):
    """TaskOutput.training["finetune"] is the recipe's global batch and accumulation at the trainer's precision (not
    the run's --batch-size), read back from the cached model's final.json when it is reused; the evaluation runs at the
    run's own settings (None)."""
    from pathlib import Path

    from utabench.core.context import RunContext, Setup
    from utabench.core.registry import TASKS

    recipe = json.loads(open(_recipe(tmp_path)).read())
    recipe["optim"].update(grad_accum=2, steps=2, warmup_steps=1)
    (tmp_path / "accum.yaml").write_text(json.dumps(recipe))
    task = TASKS.get("finetune-classification")()
    entry = {"name": "imagenet", "type": "imagenet", "root": str(world / "imagenet"),
             "classes": str(world / "classes.json"), "recipe": str(tmp_path / "accum.yaml")}
    data, options = task.load(entry), task.options_of(entry)
    ctx = RunContext(device="cpu", batch_size=3, workers=0, cache_dir=tmp_path / "cache", progress=False)
    backbone = build_backbone("uta:tiny")
    out = task.run(backbone, data, ctx, options)
    assert out.training == {"finetune": Setup(8, "fp32", "cpu", 1, 2)} and out.evaluation is None
    final = Path(out.details["work_dir"]) / "final.json"
    assert json.loads(final.read_text())["setup"] == {"batch_size": 8, "precision": "fp32", "device": "cpu",
                                                      "world_size": 1, "grad_accum": 2}
    assert task.run(backbone, data, ctx, options).training == out.training  # the cached model's recorded setup
    meta = json.loads(final.read_text())
    del meta["setup"]  # a model cached before setups were recorded: no setup to report, none guessed
    final.write_text(json.dumps(meta))
    assert task.run(backbone, data, ctx, options).training == {}
