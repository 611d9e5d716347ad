"""Some of the world's sets again as CLIP_benchmark webdataset exports (`<world>/wds/<name>`), in the layout its
`clip_benchmark_export_wds` writes: classnames.txt, zeroshot_classification_templates.txt, dataset_type.txt for a
retrieval set, <split>/nshards.txt and <split>/<i>.tar of samples `s%07d` with the image file's bytes under its
extension and `.cls` (the label as text), `.txt` (captions, one per line) or `.npy` (metadata).

- imagenet1k: the world's ImageNet val (test) and train (train), each sample with metadata [group], a stand-in for
  DataComp's group fields (Dollar Street's income group, GeoDE's region): the class index // 4;
- imagenet-r, imagenet-sketch: test;
- flickr30k: its Karpathy test images with their captions (retrieval).

Made once per world, beside its folders (the world's own files and version are unchanged), atomically; a world
generated with counts that leave a set (or its train split) empty exports what it has.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from webdataset import ShardWriter

from utabench.datasets.classification import imagenet, imagenet_r, imagenet_sketch
from utabench.datasets.retrieval import flickr30k

SHARD_SIZE = 500  # samples a shard: the world's sets take several shards, as real exports do
GROUP_OF_CLASS = 4  # metadata group = class index // 4


def _write(out: Path, split: str, samples: Sequence[Tuple[Path, dict]]) -> None:
    (out / split).mkdir(parents=True)
    with ShardWriter(str(out / split / "%d.tar"), maxcount=SHARD_SIZE, verbose=0) as sink:
        for index, (path, fields) in enumerate(samples):
            sink.write({"__key__": "s%07d" % index, path.suffix.lstrip(".").lower().replace("jpeg", "jpg"):
                        path.read_bytes(), **fields})
        shards = sink.shard
    (out / split / "nshards.txt").write_text(f"{shards}\n")


def _npy(row: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, row, allow_pickle=False)
    return buffer.getvalue()


def export_classification(out: Path, splits, classnames: List[str], templates: List[str],
                          group_of_class: Optional[int] = None) -> None:
    """`splits`: {split: [(image, label)]}; with `group_of_class`, each sample's .npy is [label // it]."""
    out.mkdir(parents=True)
    (out / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (out / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    for split, samples in splits.items():
        _write(out, split, [(path, {"cls": label, **({"npy": _npy(np.array([label // group_of_class]))}
                                                     if group_of_class else {})}) for path, label in samples])


def export_retrieval(out: Path, images: List[Path], captions: List[List[str]]) -> None:
    out.mkdir(parents=True)
    (out / "dataset_type.txt").write_text("retrieval\n")
    _write(out, "test", [(path, {"txt": "\n".join(c.replace("\n", r"\n") for c in caps)})
                         for path, caps in zip(images, captions)])


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(path.is_file() for path in folder.rglob("*.*"))


def ensure_exports(world: Path) -> Path:
    """`<world>/wds`, made if missing."""
    root = world / "wds"
    if root.is_dir():
        return root
    tmp = world / f".wds.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    entry = {"classes": str(world / "classes.json"), "templates": str(world / "templates.txt")}
    if _has_images(world / "imagenet" / "val"):
        val = imagenet({**entry, "root": str(world / "imagenet")})
        splits = {"test": val.samples}
        if _has_images(world / "imagenet" / "train"):
            splits["train"] = imagenet({**entry, "root": str(world / "imagenet" / "train")}).samples
        export_classification(tmp / "imagenet1k", splits, val.classnames, val.templates, GROUP_OF_CLASS)
    for name, reader, folder in (("imagenet-r", imagenet_r, "imagenet-r"),
                                 ("imagenet-sketch", imagenet_sketch, "imagenet-sketch")):
        if _has_images(world / folder):
            data = reader({**entry, "root": str(world / folder)})
            export_classification(tmp / name, {"test": data.samples}, data.classnames, data.templates)
    if (world / "flickr30k" / "dataset_flickr30k.json").is_file():
        flickr = flickr30k({"root": str(world / "flickr30k")})
        export_retrieval(tmp / "flickr30k", flickr.images, flickr.captions)
    try:
        os.rename(tmp, root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root
