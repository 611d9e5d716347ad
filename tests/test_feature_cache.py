"""The image-feature cache: a hit re-encodes nothing and gives the same metrics; other templates or class names hit;
other weights, precision, image contents, transform or corrupt-image handling miss; `--no-feature-cache` neither
reads nor writes; a crash mid-extraction leaves no entry, and an unreadable entry is computed again."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from utabench.backbones import build_backbone
from utabench.core.registry import DATASETS
from utabench.datasets.images import ImageList
from utabench.harness.cli import main
from utabench.tasks import feature_cache
from utabench.tasks.zeroshot_classification import ZeroShotClassification


def _entries(ctx):
    return sorted((ctx.cache_dir / "features").glob("*.safetensors"))


def _data(root):
    return DATASETS.get("imagenet")({"root": str(root / "imagenet"), "classes": str(root / "classes.json"),
                                     "name": "imagenet-1k"})


class Counting:
    """Counts the backbone's encode_image calls (the real one runs)."""

    def __init__(self, backbone):
        self.calls, self.encode = 0, backbone.encode_image

    def __call__(self, images):
        self.calls += 1
        return self.encode(images)


def test_hit_reencodes_nothing_and_gives_the_same_metrics(world, ctx, monkeypatch):
    backbone = build_backbone("uta:tiny")
    counter = Counting(backbone)
    monkeypatch.setattr(backbone, "encode_image", counter)
    first = ZeroShotClassification().run(backbone, _data(world), ctx)
    assert counter.calls > 0 and len(_entries(ctx)) == 1 and first.details["image_features"] == "computed"
    counter.calls = 0
    again = ZeroShotClassification().run(backbone, _data(world), ctx)
    assert counter.calls == 0 and again.details["image_features"] == "cached" and again.metrics == first.metrics
    data = _data(world)
    data.templates = ["a drawing of a {c}."]  # other templates (and class names) use the same image features
    data.classnames = [f"shape {c}" for c in data.classnames]
    ZeroShotClassification().run(backbone, data, ctx)
    assert counter.calls == 0 and len(_entries(ctx)) == 1


def _key(backbone, samples, ctx, skip=False):
    return feature_cache.feature_key(backbone, ImageList(samples, backbone.image_transform(), skip), ctx)


def test_what_changes_the_key(world, tmp_path, ctx):
    root = tmp_path / "copy"
    shutil.copytree(world / "imagenet", root / "imagenet")
    shutil.copy(world / "classes.json", root / "classes.json")
    samples = _data(root).samples
    backbone = build_backbone("uta:tiny")
    key = _key(backbone, samples, ctx)
    assert _key(build_backbone("uta:tiny"), samples, ctx) == key  # the same weights, built again
    changed = {
        "weights": _key(build_backbone({"spec": "uta:tiny", "seed": 1}), samples, ctx),
        "image size": _key(build_backbone({"spec": "uta:tiny", "image_size": 32}), samples, ctx),
        "precision": _key(backbone, samples, dataclasses.replace(ctx, precision="amp_bf16")),
        "skip corrupt": _key(backbone, samples, ctx, skip=True),
        "order": _key(backbone, samples[::-1], ctx),
        "targets": _key(backbone, [(path, 0) for path, _ in samples], ctx),
    }
    path = samples[0][0]
    path.write_bytes(path.read_bytes() + b"\0")  # one image's bytes change
    changed["contents"] = _key(backbone, samples, ctx)
    assert all(value != key for value in changed.values()), changed
    assert len(set(changed.values())) == len(changed)


def test_no_feature_cache_neither_reads_nor_writes(world, tmp_path):
    common = ["run", "zeroshot-classification", "--backbone", "uta:tiny", "--dataset",
              f"imagenet:{world / 'imagenet'}", "--classes", str(world / "classes.json"), "--cache-dir",
              str(tmp_path / "cache"), "--device", "cpu", "--no-progress"]
    assert main(common + ["--results", str(tmp_path / "a"), "--no-feature-cache"]) == 0
    assert not (tmp_path / "cache" / "features").exists()
    assert main(common + ["--results", str(tmp_path / "b")]) == 0
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 1
    assert main(common + ["--results", str(tmp_path / "c"), "--no-feature-cache"]) == 0
    records = [json.loads(next((tmp_path / r).rglob("imagenet.json")).read_text()) for r in "abc"]
    assert [r["provenance"]["task_details"]["image_features"] for r in records] == ["computed"] * 3
    assert records[0]["metrics"] == records[1]["metrics"] == records[2]["metrics"]
    assert records[2]["provenance"]["evaluation"]["feature_cache"] is False


def test_a_crash_leaves_no_entry_and_a_bad_entry_is_recomputed(world, ctx, monkeypatch):
    backbone = build_backbone("uta:tiny")
    ctx = dataclasses.replace(ctx, batch_size=2)
    real, calls = backbone.encode_image, []

    def dies_on_the_second_batch(images):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(images)

    monkeypatch.setattr(backbone, "encode_image", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        ZeroShotClassification().run(backbone, _data(world), ctx)
    assert _entries(ctx) == [] and not list((ctx.cache_dir / "features").glob(".*"))
    monkeypatch.setattr(backbone, "encode_image", real)
    good = ZeroShotClassification().run(backbone, _data(world), ctx)
    (entry,) = _entries(ctx)
    entry.write_bytes(entry.read_bytes()[:100])  # an entry damaged on disk
    again = ZeroShotClassification().run(backbone, _data(world), ctx)
    assert again.details["image_features"] == "computed" and again.metrics == good.metrics
    assert feature_cache._read(entry) is not None  # rewritten whole
    assert ZeroShotClassification().run(backbone, _data(world), ctx).details["image_features"] == "cached"
