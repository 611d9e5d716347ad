"""CLIP_benchmark's webdataset exports, written by CLIP_benchmark's own exporter from the world's sets, read as
published: zero-shot classification and retrieval equal CLIP_benchmark's wds loader and metrics on the same model;
a bad shard is one line; the fingerprint and the feature cache follow the shards' contents."""

from __future__ import annotations

import functools
import http.server
import io
import json
import shutil
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from clip_benchmark.datasets.builder import build_dataset
from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval
from clip_benchmark.webdataset_builder import convert_dataset, convert_retrieval_dataset, path_to_bytes
from torch.utils.data import DataLoader

from utabench.backbones import build_backbone
from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS, TASKS
from utabench.harness.cli import main
from utabench.tasks.bootstrap import point_metrics
from utabench.tasks.retrieval import Retrieval
from utabench.tasks.zeroshot_classification import ZeroShotClassification

BACKBONE = {"spec": "clip:utabench-clip-tiny", "seed": 1}
TEMPLATES = ["a photo of a {c}.", "a drawing of the {c}."]


class _Listed(list):
    """(image path, label) pairs with the class names and templates convert_dataset writes beside the shards."""

    classes: list = []
    templates = TEMPLATES


@pytest.fixture(scope="module")
def exports(world, tmp_path_factory):
    """The world's imagenet val and flickr30k test as wds sets (4 and 9 samples a shard: several shards)."""
    root = tmp_path_factory.mktemp("wds")
    val = DATASETS.get("imagenet")({"root": str(world / "imagenet"), "classes": str(world / "classes.json"),
                                    "name": "in"})
    listed = _Listed((str(path), label) for path, label in val.samples)
    listed.classes = val.classnames
    convert_dataset(listed, "test", str(root / "wds_in"), transform=path_to_bytes, max_count=4, verbose=False)
    flickr = DATASETS.get("flickr30k")({"root": str(world / "flickr30k"), "name": "flickr30k"})
    pairs = [(str(path), caps) for path, caps in zip(flickr.images, flickr.captions)]
    convert_retrieval_dataset(pairs, "test", str(root / "wds_flickr"), transform=path_to_bytes, max_count=9,
                              verbose=False)
    return root


def _theirs(root: Path, backbone, task: str):
    data = build_dataset(f"wds/{root.name}", root=str(root), transform=backbone.image_transform(), split="test",
                         task=task)
    return data, DataLoader(data.batched(7), batch_size=None)  # as clip_benchmark's cli loads a wds set


def test_zero_shot_on_wds_equals_clip_benchmark(exports, ctx):
    assert int((exports / "wds_in" / "test" / "nshards.txt").read_text()) > 2
    backbone = build_backbone(BACKBONE)
    data = ZeroShotClassification().load({"type": "wds", "root": str(exports / "wds_in"), "name": "in"})
    assert data.templates == TEMPLATES and len(data.files) > 2  # its own templates; the files are the shards
    ours = ZeroShotClassification().run(backbone, data, ctx).metrics
    theirs_data, loader = _theirs(exports / "wds_in", backbone, "zeroshot_classification")
    theirs = zeroshot_classification.evaluate(backbone, loader, backbone.tokenize, theirs_data.classes,
                                              theirs_data.templates, "cpu", amp=False)
    assert theirs_data.classes == data.classnames and theirs_data.templates == data.templates
    for key, value in {"top1": "acc1", "top5": "acc5", "mean_per_class_recall": "mean_per_class_recall"}.items():
        assert ours[key] == pytest.approx(100 * theirs[value], abs=1e-6), key


def test_retrieval_on_wds_equals_clip_benchmark(exports, ctx):
    backbone = build_backbone(BACKBONE)
    data = Retrieval().load({"type": "wds", "root": str(exports / "wds_flickr"), "name": "flickr"})
    ours = Retrieval().run(backbone, data, ctx).metrics
    _, loader = _theirs(exports / "wds_flickr", backbone, "zeroshot_retrieval")
    theirs = zeroshot_retrieval.evaluate(backbone, loader, backbone.tokenize, "cpu", amp=False,
                                         recall_k_list=[1, 5, 10])
    for k in (1, 5, 10):  # clip_benchmark averages in float32
        assert ours[f"image_r{k}"] == pytest.approx(100 * theirs[f"image_retrieval_recall@{k}"], abs=1e-4)
        assert ours[f"text_r{k}"] == pytest.approx(100 * theirs[f"text_retrieval_recall@{k}"], abs=1e-4)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(root):
    shard = root / "test" / "1.tar"
    shard.write_bytes(shard.read_bytes()[:700])


def _drop_member(ext):
    def change(root):
        shard = root / "test" / "0.tar"
        with tarfile.open(shard) as tar:
            kept = [(m, tar.extractfile(m).read()) for m in tar if not m.name.endswith(f"s0000001.{ext}")]
        with tarfile.open(shard, "w") as tar:
            for member, data in kept:
                tar.addfile(member, io.BytesIO(data))
    return change


def _relabel(root):
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name.endswith(".cls"):
                data = b"99"
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


BAD = [
    ("no-nshards", lambda root: (root / "test" / "nshards.txt").unlink(), "nshards.txt is missing"),
    ("missing-shard", lambda root: (root / "test" / "2.tar").unlink(), "lacks shards 2.tar"),
    ("truncated", _truncate, "is truncated or not a tar"),
    ("no-image", _drop_member("jpg"), "has no image"),
    ("no-label", _drop_member("cls"), "has no label (.cls)"),
    ("label-range", _relabel, "has label 99, outside the 10 classes"),
    ("blank-class", lambda root: (root / "classnames.txt").write_text("a\n\nb\n"), "line 2 is blank"),
]


@pytest.mark.parametrize("name,change,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_export_is_one_line_and_writes_nothing(exports, tmp_path, capsys, name, change, message):
    root = _copy(exports / "wds_in", tmp_path / "set")
    change(root)
    results = tmp_path / "r"
    assert main(["run", "zeroshot-classification", "--backbone", "clip:utabench-clip-tiny", "--dataset",
                 f"wds:{root}", "--results", str(results), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not results.exists()


def test_a_retrieval_set_for_zero_shot_is_one_line(exports, capsys, tmp_path):
    assert main(["run", "zeroshot-classification", "--backbone", "clip:utabench-clip-tiny", "--dataset",
                 f"wds:{exports / 'wds_flickr'}", "--results", str(tmp_path / "r")]) == 2
    assert "is a retrieval set; task zeroshot-classification reads classification sets" in capsys.readouterr().err


def test_fingerprint_and_feature_cache_follow_the_shards(exports, tmp_path):
    root = _copy(exports / "wds_in", tmp_path / "set")
    args = ["run", "zeroshot-classification", "--backbone", "clip:utabench-clip-tiny", "--dataset", f"wds:{root}",
            "--cache-dir", str(tmp_path / "cache"), "--threads", "2", "--no-progress", "--force"]

    def record(results):
        assert main([*args, "--results", str(tmp_path / results)]) == 0
        return json.loads(next((tmp_path / results).rglob("wds.json")).read_text())

    first, again = record("a"), record("b")
    assert first["provenance"]["dataset"]["fingerprint"] == again["provenance"]["dataset"]["fingerprint"]
    assert (first["provenance"]["task_details"]["image_features"], again["provenance"]["task_details"][
        "image_features"]) == ("computed", "cached")
    _drop_member("cls")(root)  # one sample fewer in shard 0 ...
    _drop_member("jpg")(root)
    changed = record("c")
    assert changed["provenance"]["dataset"]["fingerprint"] != first["provenance"]["dataset"]["fingerprint"]
    assert changed["provenance"]["task_details"]["image_features"] == "computed"
    assert changed["provenance"]["dataset"]["num_images"] == first["provenance"]["dataset"]["num_images"] - 1


def test_a_corrupt_image_in_a_shard_is_one_line_or_skipped_and_counted(exports, tmp_path, capsys):
    root = _copy(exports / "wds_in", tmp_path / "set")
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(b"\0" * member.size if member.name.endswith("s0000002.jpg") else data))
    args = ["run", "zeroshot-classification", "--backbone", "clip:utabench-clip-tiny", "--dataset", f"wds:{root}",
            "--cache-dir", str(tmp_path / "cache"), "--threads", "2", "--no-progress"]
    assert main([*args, "--results", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "0.tar:s0000002.jpg" in err and "--skip-corrupt" in err
    assert main([*args, "--results", str(tmp_path / "b"), "--skip-corrupt"]) == 0
    dataset = json.loads(next((tmp_path / "b").rglob("wds.json")).read_text())["provenance"]["dataset"]
    assert dataset["skipped_images"] == 1 and dataset["num_images"] == 39


def test_a_multilabel_export_scores_clip_benchmarks_map(world, exports, ctx, tmp_path):
    """CLIP_benchmark's exporter with multilabel=True (.npy multi-hot labels): mean average precision equals its
    own over the same shards; a probe refuses the set in one line."""
    val = DATASETS.get("imagenet")({"root": str(world / "imagenet"), "classes": str(world / "classes.json"),
                                    "name": "in"})
    hot = np.zeros((len(val.samples), len(val.classnames)), dtype=np.int64)
    for i, (_, label) in enumerate(val.samples):
        hot[i, label] = hot[i, (label + 1 + i % 3) % len(val.classnames)] = 1  # a second label per image
    listed = _Listed((str(path), row) for (path, _), row in zip(val.samples, hot))
    listed.classes = val.classnames
    root = tmp_path / "wds_multi"
    convert_dataset(listed, "test", str(root), transform=path_to_bytes, max_count=16, multilabel=True, verbose=False)
    backbone = build_backbone(BACKBONE)
    data = ZeroShotClassification().load({"type": "wds", "root": str(root), "name": "multi"})
    out = ZeroShotClassification().run(backbone, data, ctx)
    ours = out.metrics
    assert point_metrics(out.samples) == pytest.approx(ours, rel=1e-5)  # the outcomes its interval resamples
    theirs_data, loader = _theirs(root, backbone, "zeroshot_classification")
    theirs = zeroshot_classification.evaluate(backbone, loader, backbone.tokenize, theirs_data.classes,
                                              theirs_data.templates, "cpu", amp=False)
    assert set(ours) == {"mean_average_precision"}
    assert ours["mean_average_precision"] == pytest.approx(100 * theirs["mean_average_precision"], abs=1e-4)
    shutil.copytree(root / "test", root / "train")
    with pytest.raises(UtabenchError, match="is a multilabel set; a probe reads one label an image"):
        TASKS.get("linear-probe")().load({"type": "wds", "root": str(root), "name": "multi"})


def test_a_set_behind_a_url_is_mirrored_then_read_as_the_folder(exports, ctx, tmp_path):
    """root: http://... (a local server here): the metadata and shards are downloaded once into the mirror, then the
    set reads exactly as its folder; a missing set is one line."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(exports))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/wds_in"
        entry = {"type": "wds", "root": url, "name": "in", "mirror": str(tmp_path / "mirror")}
        remote = ZeroShotClassification().load(entry)
        local = ZeroShotClassification().load({"type": "wds", "root": str(exports / "wds_in"), "name": "in"})
        assert remote.classnames == local.classnames and remote.templates == local.templates
        assert [f.read_bytes() for f in remote.files] == [f.read_bytes() for f in local.files]
        backbone = build_backbone(BACKBONE)
        assert ZeroShotClassification().run(backbone, remote, ctx).metrics == \
            ZeroShotClassification().run(backbone, local, replace(ctx, cache_dir=tmp_path / "other")).metrics
        with pytest.raises(UtabenchError, match="cannot download .*/wds_absent/test/nshards.txt: HTTP 404"):
            ZeroShotClassification().load({**entry, "root": url.replace("wds_in", "wds_absent")})
    finally:
        server.shutdown()


def test_a_hugging_face_tree_url_reads_metadata_raw_and_shards_resolved():
    from utabench.datasets.wds_mirror import _bases

    assert _bases("https://huggingface.co/datasets/djghosh/wds_cars_test/tree/main/") == (
        "https://huggingface.co/datasets/djghosh/wds_cars_test/raw/main",
        "https://huggingface.co/datasets/djghosh/wds_cars_test/resolve/main")
    assert _bases("https://example.org/sets/wds_cars") == ("https://example.org/sets/wds_cars",) * 2
