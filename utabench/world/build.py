"""Write the embedded world in the standard on-disk layouts of the real datasets.

One world of 10 shape classes (synthetic wnids n90000000..n90000009, names in `classes.json`), shown under the
distribution shifts of the ImageNet family: photos for -1K val and a fresh sample for -V2, line drawings for -Sketch,
cartoon and pixel-art renditions for -R (8 of the 10 classes, like R's 200 of 1000), clutter and occlusion for -A
(another 8), unusual backgrounds and poses for ObjectNet (8 mapped folders plus one unmapped, like ObjectNet's 113 of
313), and captioned scenes of one or two objects in Karpathy-split files for Flickr30k and COCO. For pretraining it adds
an ImageFolder train split (`imagenet/train`, images only, for the students) and image-caption pairs as webdataset
shards (`pairs/pairs-NNNNN.tar`, jpg + txt with several captions per image, for the CLIP teacher). For dense transfer it
adds COCO 2017 instances (boxes and masks), an LVIS v1 set with a long-tailed category frequency and an ADE20K-style
segmentation set (see `dense.py`). For LLaVA it adds caption pairs, instruction conversations, a LLaVA-Bench layout and
a tiny LLaMA with its own tokenizer (see `llava.py`).
Generation is seeded and written into a temporary directory that is renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import tarfile
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from utabench.core.orphans import exit_with_parent
from utabench.world.dense import write_detection_sets, write_segmentation_set
from utabench.world.llava import write_llava_sets, write_tiny_llm  # (imports transformers)
from utabench.world.phrasing import join_phrases, where_in_image
from utabench.world.scene import BACKGROUNDS, SHAPES, Scene, render, sample_object
from utabench.world.wds_export import ensure_exports

GENERATOR_VERSION = 6
IMAGE_SIZE = (80, 64)
DEFAULT_COUNTS = {"val": 40, "v2": 10, "sketch": 10, "a": 10, "r": 10, "objectnet": 10, "flickr30k": 100,
                  "coco": 150, "train": 300, "pairs": 6000, "det_train": 400, "det_val": 100,
                  "seg_train": 400, "seg_val": 100, "llava_pretrain": 1000, "llava_instruct": 1000,
                  "llava_bench": 60}
PAIRS_PER_SHARD = 1000
PARALLEL_FROM = 2000  # counts (summed) from which ensure_world writes the parts in several processes
A_CLASSES = (0, 1, 2, 3, 4, 5, 6, 8)
R_CLASSES = (0, 1, 2, 3, 5, 6, 7, 9)
OBJECTNET_CLASSES = (0, 1, 2, 3, 4, 6, 7, 9)
UNUSUAL_POSE = 0.6  # radians either way for -A and ObjectNet, against 0.35 for photos: unusual, still learnable
_STREAMS = {name: i for i, name in enumerate(["val", "v2", "sketch", "a", "r", "objectnet", "flickr30k", "coco",
                                                 "train", "pairs", "coco_train2017", "coco_val2017",
                                                 "lvis_train2017", "lvis_val2017", "ade_training",
                                                 "ade_validation", "llava_pretrain", "llava_instruct",
                                                 "llava_bench"])}


def world_wnids() -> List[str]:
    return [f"n9{i:07d}" for i in range(len(SHAPES))]


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], index])


def _single(rng, cls: int, scale=(0.55, 0.9), max_angle=0.35) -> Scene:
    scene = Scene(IMAGE_SIZE, str(rng.choice(list(BACKGROUNDS))))
    scene.objects.append(sample_object(rng, SHAPES[cls], IMAGE_SIZE, scale, max_angle))
    return scene


def _write(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        image.save(path)
    else:
        image.save(path, format="JPEG", quality=90)


def _class_sets(root: Path, seed: int, counts: Dict[str, int]) -> None:
    wnids = world_wnids()
    k = 0
    for cls, wnid in enumerate(wnids):
        for i in range(counts["val"]):
            rng = _rng(seed, "val", cls * 10_000 + i)
            k += 1
            _write(render(_single(rng, cls), "photo", rng), root / "imagenet" / "val" / wnid /
                   f"ILSVRC2012_val_{k:08d}.JPEG")
        for i in range(counts["v2"]):
            rng = _rng(seed, "v2", cls * 10_000 + i)
            name = hashlib.sha1(f"{seed}-{cls}-{i}".encode()).hexdigest()
            _write(render(_single(rng, cls), "photo", rng),
                   root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(cls) / f"{name}.jpeg")
        for i in range(counts["sketch"]):
            rng = _rng(seed, "sketch", cls * 10_000 + i)
            _write(render(_single(rng, cls), "sketch", rng), root / "imagenet-sketch" / "sketch" / wnid /
                   f"sketch_{i}.JPEG")
        if cls in A_CLASSES:
            for i in range(counts["a"]):
                rng = _rng(seed, "a", cls * 10_000 + i)
                scene = _single(rng, cls, scale=(0.5, 0.8), max_angle=UNUSUAL_POSE)
                _write(render(scene, "clutter", rng), root / "imagenet-a" / wnid / f"{i:04d}.jpg")
        if cls in R_CLASSES:
            for i in range(counts["r"]):
                rng = _rng(seed, "r", cls * 10_000 + i)
                style = "cartoon" if i % 2 == 0 else "pixel"
                _write(render(_single(rng, cls), style, rng), root / "imagenet-r" / wnid / f"{style}_{i}.jpg")


def _objectnet(root: Path, seed: int, count: int) -> None:
    base = root / "objectnet" / "objectnet-1.0"
    folder_to_label = {SHAPES[c]: SHAPES[c].capitalize() for c in OBJECTNET_CLASSES}
    folder_to_label["lamp"] = "Lamp"  # an ObjectNet class with no ImageNet counterpart: not evaluated
    to_imagenet = {SHAPES[c].capitalize(): SHAPES[c] for c in OBJECTNET_CLASSES}
    (base / "mappings").mkdir(parents=True, exist_ok=True)
    (base / "mappings" / "folder_to_objectnet_label.json").write_text(json.dumps(folder_to_label, indent=1))
    (base / "mappings" / "objectnet_to_imagenet_1k.json").write_text(json.dumps(to_imagenet, indent=1))
    # the release's two files that tie ImageNet label strings to class indices, for the world's 10 classes
    (base / "mappings" / "imagenet_to_label_2012_v2").write_text("".join(f"{s}\n" for s in SHAPES))
    (base / "mappings" / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({i: i for i in range(len(SHAPES))}))
    for j, folder in enumerate(folder_to_label):
        cls = SHAPES.index(folder) if folder in SHAPES else int(_rng(seed, "objectnet", 999).integers(len(SHAPES)))
        for i in range(count):
            rng = _rng(seed, "objectnet", j * 10_000 + i)
            scene = _single(rng, cls, scale=(0.5, 0.85), max_angle=UNUSUAL_POSE)
            _write(render(scene, "unusual", rng), base / "images" / folder / f"{i:04d}.png")


def captions(scene: Scene) -> List[str]:
    """Five captions of a retrieval scene, naming its shapes as the pretraining captions do. Decision: no colours or
    backgrounds, which the world's teacher never reads (`pair_captions`): captions it could not have learned to
    match would leave every model's retrieval at chance."""
    things = [f"a {o.shape}" for o in scene.objects]
    joined = join_phrases(things)
    count = ["one shape", "two shapes", "three shapes"][len(things) - 1]
    return [
        f"{joined}.",
        f"an image of {joined}.",
        f"{count}: {joined}.",
        f"a picture of {joined}.",
        f"{things[0]} at the {where_in_image(scene.objects[0], scene.size)} of the image.",
    ]


def _captioned_scene(rng, max_objects: int = 3) -> Scene:
    scene = Scene(IMAGE_SIZE, str(rng.choice(list(BACKGROUNDS))))
    n = int(rng.integers(1, max_objects + 1))
    for shape in rng.choice(len(SHAPES), size=n, replace=False):
        scene.objects.append(sample_object(rng, SHAPES[int(shape)], IMAGE_SIZE, (0.3, 0.5) if n > 1 else (0.5, 0.85)))
    return scene


def _retrieval(root: Path, seed: int, stream: str, count: int) -> None:
    folder, ann, subdir = {"flickr30k": ("flickr30k", "dataset_flickr30k.json", "flickr30k-images"),
                           "coco": ("coco", "dataset_coco.json", "val2014")}[stream]
    entries = []
    for i in range(count):
        rng = _rng(seed, stream, i)
        scene = _captioned_scene(rng, max_objects=2)
        filename = f"{100000 + i}.jpg" if stream == "flickr30k" else f"COCO_val2014_{i:012d}.jpg"
        _write(render(scene, "photo", rng), root / folder / subdir / filename)
        entry = {"filename": filename, "imgid": i, "split": "test",
                 "sentences": [{"raw": c, "imgid": i} for c in captions(scene)]}
        if stream == "coco":
            entry["filepath"] = subdir
        entries.append(entry)
    (root / folder / ann).write_text(json.dumps({"images": entries, "dataset": stream}))


def _train_split(root: Path, seed: int, count: int) -> None:
    for cls, wnid in enumerate(world_wnids()):
        for i in range(count):
            rng = _rng(seed, "train", cls * 10_000 + i)
            _write(render(_single(rng, cls), "photo", rng), root / "imagenet" / "train" / wnid / f"{wnid}_{i}.JPEG")


PROMPTS = ("a photo of a {c}.", "a {c}.", "a picture of a {c}.", "an image of a {c}.", "a {c} in the image.")


def pair_captions(scene: Scene) -> List[str]:
    """Captions of a pretraining pair name its object, as alt-text names the main subject, in the five phrasings
    the world's zero-shot templates (`templates.txt`) use. Decision: no colours or backgrounds, which a tiny CLIP
    learns first and then matches captions by, never learning the shapes."""
    return [prompt.format(c=scene.objects[0].shape) for prompt in PROMPTS]


def _pair_shard(root: Path, seed: int, first: int, count: int) -> None:
    """One webdataset shard of pairs `first` .. (jpg, txt with five captions), each image one object. Decision: no
    multi-object scenes, which slowed the tiny teacher's learning of shapes by half (45% against 78% zero-shot top-1
    after 900 steps, one pair in eight of two to three objects against none)."""

    folder = root / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / f"pairs-{first // PAIRS_PER_SHARD:05d}.tar", "w") as tar:
        for i in range(first, min(count, first + PAIRS_PER_SHARD)):
            rng = _rng(seed, "pairs", i)
            scene = _single(rng, int(rng.integers(len(SHAPES))))
            image = io.BytesIO()
            render(scene, "photo", rng).save(image, format="JPEG", quality=90)
            for ext, data in (("jpg", image.getvalue()), ("txt", "\n".join(pair_captions(scene)).encode())):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _llava(root: Path, seed: int, counts: Dict[str, int]) -> None:

    texts, documents = write_llava_sets(root, partial(_rng, seed), _single, counts)
    write_tiny_llm(root / "llava" / "llm", texts, documents, seed)


def _parts(seed: int, counts: Dict[str, int]) -> List[Callable[[Path], Any]]:
    """The world's parts, each written from its own random streams into its own files, so they may be written in any
    order or at once; the slowest first (LLaVA's sets and language model, the train split, the detection sets, the
    pair shards), which balances them over processes."""
    streams = partial(_rng, seed)
    parts: List[Callable[[Path], Any]] = []
    if counts["llava_pretrain"] or counts["llava_instruct"]:
        parts.append(partial(_llava, seed=seed, counts=counts))  # 38 s of the default world's 114 (one thread)
    if counts["train"]:
        parts.append(partial(_train_split, seed=seed, count=counts["train"]))
    if counts["det_train"]:
        parts.append(partial(write_detection_sets, rng=streams, counts=counts))
    parts += [partial(_pair_shard, seed=seed, first=first, count=counts["pairs"])
              for first in range(0, counts["pairs"], PAIRS_PER_SHARD)]
    if counts["seg_train"]:
        parts.append(partial(write_segmentation_set, rng=streams, counts=counts))
    parts += [partial(_class_sets, seed=seed, counts=counts), partial(_objectnet, seed=seed, count=counts["objectnet"])]
    parts += [partial(_retrieval, seed=seed, stream=stream, count=counts[stream]) for stream in ("flickr30k", "coco")]
    return parts


def generate_world(root: Path, seed: int = 0, counts: Optional[Dict[str, int]] = None, workers: int = 1) -> Path:
    """Write the world into `root`; with `workers` > 1 its parts are written by that many processes at once (the
    same files). The processes are spawned, not forked (the parent may hold torch's thread pools), so a script that
    calls this with workers > 1 needs the usual `if __name__ == "__main__":` guard."""
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps([[w, s] for w, s in zip(world_wnids(), SHAPES)]))
    (root / "templates.txt").write_text("".join(f"{prompt}\n" for prompt in PROMPTS))
    parts = _parts(seed, counts)
    if workers <= 1:
        for part in parts:
            part(root)
        return root
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        for done in [pool.submit(part, root) for part in parts]:
            done.result()
    return root


def world_root(cache_dir: Path, cfg: Dict[str, Any]) -> Path:
    """Where the world for `cfg` ({seed, counts}) lives under cache_dir (whether generated yet or not)."""
    key = hashlib.sha256(json.dumps({"cfg": cfg, "v": GENERATOR_VERSION}, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache_dir) / "world" / f"v{GENERATOR_VERSION}-{key}"


def ensure_world(cache_dir: Path, cfg: Dict[str, Any], workers: Optional[int] = None) -> Path:
    """The world for `cfg` ({seed, counts}) under cache_dir, generated once (atomically, by `workers` processes;
    default: up to 4 of the CPUs for a world the size of the default one, else 1) and reused after."""
    root = world_root(cache_dir, cfg)
    if root.is_dir():
        ensure_exports(root)
        return root
    tmp = root.parent / f".{root.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if workers is None:  # starting the processes costs seconds: worth it for the default world, not a tiny one
        counts = {**DEFAULT_COUNTS, **(cfg.get("counts") or {})}
        workers = min(4, os.cpu_count() or 1) if sum(counts.values()) >= PARALLEL_FROM else 1
    generate_world(tmp, seed=int(cfg.get("seed", 0)), counts=cfg.get("counts"), workers=workers)
    try:
        os.rename(tmp, root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    ensure_exports(root)
    return root
