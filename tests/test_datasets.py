"""Dataset readers: standard layouts, label spaces equal to clip_benchmark's definitions, and clear errors."""

from __future__ import annotations

import json

import pytest
from clip_benchmark.datasets.builder import build_dataset
from PIL import Image

from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.datasets.images import ImageList
from utabench.datasets.vocab import imagenet_subset_wnids, imagenet_wnids, openai_imagenet_classnames


def _image(path, color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


@pytest.mark.parametrize("variant", ["a", "r"])
def test_imagenet_a_r_label_space_equals_clip_benchmark(tmp_path, variant):
    root = tmp_path / f"imagenet-{variant}"
    for wnid in imagenet_subset_wnids(variant):
        _image(root / wnid / "x.jpg")
    ours = DATASETS.get(f"imagenet-{variant}")({"root": str(root)})
    theirs = build_dataset(f"imagenet-{variant}", root=str(root), transform=None)
    assert ours.classnames == theirs.classes and len(ours.classnames) == 200
    assert [label for _, label in ours.samples] == [label for _, label in theirs.samples]


def test_imagenet_full_label_space_and_v2_folders(tmp_path):
    wnids = imagenet_wnids()
    _image(tmp_path / "in" / "val" / wnids[3] / "a.JPEG")
    _image(tmp_path / "in" / "val" / wnids[999] / "b.JPEG")
    data = DATASETS.get("imagenet")({"root": str(tmp_path / "in")})
    assert data.classnames == openai_imagenet_classnames() and [label for _, label in data.samples] == [3, 999]
    _image(tmp_path / "v2" / "7" / "c.jpeg")
    v2 = DATASETS.get("imagenet-v2")({"root": str(tmp_path / "v2")})
    assert [label for _, label in v2.samples] == [7] and len(v2.classnames) == 1000


def test_world_sets_load_in_their_layouts(world):
    classes = str(world / "classes.json")
    sizes = {}
    for type_, sub in [("imagenet", "imagenet"), ("imagenet-a", "imagenet-a"), ("imagenet-r", "imagenet-r"),
                       ("imagenet-v2", "imagenetv2"), ("imagenet-sketch", "imagenet-sketch")]:
        data = DATASETS.get(type_)({"root": str(world / sub), "classes": classes})
        sizes[type_] = (len(data.classnames), len(data.samples))
    assert sizes["imagenet"] == (10, 40) and sizes["imagenet-a"] == (8, 16) and sizes["imagenet-r"] == (8, 16)
    objectnet = DATASETS.get("objectnet")({"root": str(world / "objectnet")})
    assert len(objectnet.classnames) == 8 and len(objectnet.samples) == 16
    flickr = DATASETS.get("flickr30k")({"root": str(world / "flickr30k")})
    assert len(flickr.images) == 12 and all(len(c) == 5 for c in flickr.captions)


def test_karpathy_split_filter_and_missing_image(tmp_path):
    root = tmp_path / "f30k"
    _image(root / "flickr30k-images" / "1.jpg")
    _image(root / "flickr30k-images" / "2.jpg")
    entries = [{"filename": "1.jpg", "split": "test", "sentences": [{"raw": "a dog "}]},
               {"filename": "2.jpg", "split": "train", "sentences": [{"raw": "a cat"}]}]
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    data = DATASETS.get("flickr30k")({"root": str(root)})
    assert [p.name for p in data.images] == ["1.jpg"] and data.captions == [["a dog"]]
    entries.append({"filename": "3.jpg", "split": "test", "sentences": [{"raw": "x"}]})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    with pytest.raises(UtabenchError, match="3.jpg .* is missing"):
        DATASETS.get("flickr30k")({"root": str(root)})


def test_imagefolder_names_and_templates(tmp_path):
    _image(tmp_path / "data" / "golden_retriever" / "1.png")
    _image(tmp_path / "data" / "tabby" / "1.png")
    data = DATASETS.get("imagefolder")({"root": str(tmp_path / "data")})
    assert data.classnames == ["golden retriever", "tabby"] and len(data.templates) == 80
    (tmp_path / "names.json").write_text(json.dumps({"golden_retriever": "dog", "tabby": "cat"}))
    (tmp_path / "t.txt").write_text("a photo of a {}.\nart of the {c}\n")
    data = DATASETS.get("imagefolder")({"root": str(tmp_path / "data"), "classnames": str(tmp_path / "names.json"),
                                        "templates": str(tmp_path / "t.txt")})
    assert data.classnames == ["dog", "cat"] and data.templates == ["a photo of a {c}.", "art of the {c}"]
    (tmp_path / "bad.txt").write_text("no placeholder here\n")
    with pytest.raises(UtabenchError, match=r"bad.txt, line 1: .no placeholder here. has no \{c\} \(or \{\}\) for "
                       "the class name"):
        DATASETS.get("imagefolder")({"root": str(tmp_path / "data"), "templates": str(tmp_path / "bad.txt")})


@pytest.mark.parametrize("type_,expect", [
    ("imagenet", "ROOT/val/<wnid>"), ("imagenet-a", "200 ImageNet-A wnid folders"),
    ("imagenet-v2", "0..999"), ("objectnet", "objectnet-1.0/mappings"), ("flickr30k", "dataset_flickr30k.json"),
    ("coco", "dataset_coco.json"),
])
def test_bad_layouts_name_the_expected_layout(tmp_path, type_, expect):
    with pytest.raises(UtabenchError, match="does not exist"):
        DATASETS.get(type_)({"root": str(tmp_path / "absent")})
    (tmp_path / "wrong" / "not_a_class").mkdir(parents=True)
    _image(tmp_path / "wrong" / "not_a_class" / "x.jpg")
    with pytest.raises(UtabenchError) as err:
        DATASETS.get(type_)({"root": str(tmp_path / "wrong")})
    assert expect in str(err.value)


def test_corrupt_image_is_named_or_skipped(tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    _image(good)
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(UtabenchError, match="bad.jpg.*--skip-corrupt"):
        ImageList([(good, 0), (bad, 1)])[1]
    skipping = ImageList([(good, 0), (bad, 1)], skip_corrupt=True)
    assert skipping[1] is None and skipping[0][1:] == (0, 0)


def test_fingerprint_reads_contents_and_caches_them(world, tmp_path, monkeypatch):
    """An image changed in place (same name, same size) changes the fingerprint; unchanged files are not read
    again (their hashes are cached by path, size and modification time)."""
    import shutil

    from utabench.core import fingerprint as fp

    root = tmp_path / "sketch"
    shutil.copytree(world / "imagenet-sketch", root)
    files = sorted(root.rglob("*.JPEG"))
    first = fp.fingerprint(root, files, b"x", tmp_path / "cache")
    reads = []
    monkeypatch.setattr(fp, "file_sha256", lambda path, real=fp.file_sha256: reads.append(path) or real(path))
    assert fp.fingerprint(root, files, b"x", tmp_path / "cache") == first and reads == []
    data = bytearray(files[0].read_bytes())
    data[-3] ^= 0xFF  # one byte flipped: same size
    files[0].write_bytes(bytes(data))
    changed = fp.fingerprint(root, files, b"x", tmp_path / "cache")
    assert changed != first and reads == [files[0]]
    assert fp.fingerprint(root, files, b"y", tmp_path / "cache") != changed  # class names / templates count too
