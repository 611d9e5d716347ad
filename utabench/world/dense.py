"""The world's dense-prediction sets, in the on-disk layouts of COCO 2017 instances, LVIS v1 and ADE20K.

Scenes hold one to three non-overlapping shapes, so every object's mask is its polygon (the ring keeps its hole)
rasterised at image resolution. COCO: `coco/{train2017,val2017}/*.jpg` + `coco/annotations/instances_*2017.json`
(10 categories, RLE masks, boxes tight around the masks). LVIS: `lvis/annotations/lvis_v1_{train,val}.json` with
images addressed by `coco_url` as in LVIS v1; objects of the train split are drawn from a long-tailed category
distribution, each category carries its LVIS `frequency` (r: 1-10 training images, c: 11-100, f: more), and every
image lists the categories it does not show as `neg_category_ids` (exhaustive, since the generator knows).
ADE20K: `ade20k/images/{training,validation}/*.jpg` + `ade20k/annotations/...png`, 0 = unlabelled (ignored, as in
ADE20K), 1 = ground, 2..11 = the shapes, with the class list in the release's `objectInfo150.csv` format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from utabench.world.scene import BACKGROUNDS, SHAPES, Scene, SceneObject, render, sample_object

DENSE_SIZE = (96, 96)
# LVIS-style long tail over the 10 shapes: relative frequencies of the train split's objects
LVIS_WEIGHTS = (60, 45, 35, 25, 10, 7, 4, 2.5, 0.6, 0.4)


def object_mask(obj: SceneObject, size: Tuple[int, int]) -> np.ndarray:
    """The object's pixels (the ring's hole excluded) as a (H, W) uint8 mask."""
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    outline, hole = obj.polygons
    draw.polygon(outline, fill=1)
    if hole:
        draw.polygon(hole, fill=0)
    return np.asarray(image, dtype=np.uint8)


def _separate(a: SceneObject, b: SceneObject) -> bool:
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax1 + 2 < bx0 or bx1 + 2 < ax0 or ay1 + 2 < by0 or by1 + 2 < ay0


def dense_scene(rng: np.random.Generator, pick_class: Callable[[np.random.Generator], int]) -> Scene:
    """One to three shapes whose boxes do not touch (a shape that does not fit after 20 tries is left out)."""
    scene = Scene(DENSE_SIZE, str(rng.choice(list(BACKGROUNDS))))
    for _ in range(int(rng.integers(1, 4))):
        cls = pick_class(rng)
        for _try in range(20):
            obj = sample_object(rng, SHAPES[cls], DENSE_SIZE, (0.3, 0.6))
            if all(_separate(obj, other) for other in scene.objects):
                scene.objects.append(obj)
                break
    return scene


def _instance(obj: SceneObject, image_id: int, ann_id: int, with_crowd: bool) -> Dict:
    mask = object_mask(obj, DENSE_SIZE)
    rle = mask_utils.encode(np.asfortranarray(mask))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    ann = {"id": ann_id, "image_id": image_id, "category_id": SHAPES.index(obj.shape) + 1,
           "bbox": [x, y, w, h], "area": float(mask_utils.area(rle)),
           "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}}
    if with_crowd:
        ann["iscrowd"] = 0
    return ann


def _instances(root: Path, rng_for: Callable[[int], np.random.Generator], split: str, count: int,
               pick_class, lvis: bool, first_id: int) -> Dict:
    images, annotations = [], []
    for i in range(count):
        rng = rng_for(i)
        scene = dense_scene(rng, pick_class)
        image_id = first_id + i
        file_name = f"{image_id:012d}.jpg"
        path = root / split / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        render(scene, "photo", rng).save(path, format="JPEG", quality=90)
        image = {"id": image_id, "width": DENSE_SIZE[0], "height": DENSE_SIZE[1]}
        if lvis:
            present = {SHAPES.index(o.shape) + 1 for o in scene.objects}
            image.update(coco_url=f"http://images.cocodataset.org/{split}/{file_name}",
                         neg_category_ids=[c for c in range(1, len(SHAPES) + 1) if c not in present],
                         not_exhaustive_category_ids=[])
        else:
            image["file_name"] = file_name
        images.append(image)
        for k, obj in enumerate(scene.objects):
            annotations.append(_instance(obj, image_id, image_id * 10 + k, not lvis))
    return {"images": images, "annotations": annotations}


def _lvis_categories(train: Dict) -> List[Dict]:
    image_count = {c: len({a["image_id"] for a in train["annotations"] if a["category_id"] == c})
                   for c in range(1, len(SHAPES) + 1)}
    instance_count = {c: sum(a["category_id"] == c for a in train["annotations"]) for c in image_count}
    return [{"id": c, "name": SHAPES[c - 1], "synonyms": [SHAPES[c - 1]], "synset": f"{SHAPES[c - 1]}.n.01",
             "def": f"a {SHAPES[c - 1]} shape", "image_count": image_count[c], "instance_count": instance_count[c],
             "frequency": "r" if image_count[c] <= 10 else "c" if image_count[c] <= 100 else "f"}
            for c in image_count]


def write_detection_sets(root: Path, rng: Callable[[str, int], np.random.Generator], counts: Dict[str, int]) -> None:
    uniform = lambda r: int(r.integers(len(SHAPES)))  # noqa: E731
    weights = np.asarray(LVIS_WEIGHTS) / sum(LVIS_WEIGHTS)
    long_tail = lambda r: int(r.choice(len(SHAPES), p=weights))  # noqa: E731
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    for split, n, offset in (("train2017", counts["det_train"], 1), ("val2017", counts["det_val"], 500_001)):
        coco = _instances(root / "coco", lambda i: rng(f"coco_{split}", i), split, n, uniform, False, offset)
        coco["categories"] = categories
        _dump(root / "coco" / "annotations" / f"instances_{split}.json", coco)
    lvis_train = _instances(root / "lvis", lambda i: rng("lvis_train2017", i), "train2017", counts["det_train"],
                            long_tail, True, 1)
    lvis_val = _instances(root / "lvis", lambda i: rng("lvis_val2017", i), "val2017", counts["det_val"], uniform,
                          True, 500_001)
    lvis_categories = _lvis_categories(lvis_train)
    for name, data in (("train", lvis_train), ("val", lvis_val)):
        data["categories"] = lvis_categories
        _dump(root / "lvis" / "annotations" / f"lvis_v1_{name}.json", data)


def _label_map(scene: Scene) -> np.ndarray:
    labels = np.ones(DENSE_SIZE[::-1], dtype=np.uint8)  # 1 = ground
    for obj in scene.objects:
        labels[object_mask(obj, DENSE_SIZE) > 0] = SHAPES.index(obj.shape) + 2
    return labels


def write_segmentation_set(root: Path, rng: Callable[[str, int], np.random.Generator], counts: Dict[str, int]) -> None:
    base = root / "ade20k"
    uniform = lambda r: int(r.integers(len(SHAPES)))  # noqa: E731
    for split, prefix, n in (("training", "ADE_train", counts["seg_train"]), ("validation", "ADE_val", counts["seg_val"])):
        for i in range(n):
            r = rng(f"ade_{split}", i)
            scene = dense_scene(r, uniform)
            name = f"{prefix}_{i + 1:08d}"
            image, labels = base / "images" / split / f"{name}.jpg", base / "annotations" / split / f"{name}.png"
            for path in (image, labels):
                path.parent.mkdir(parents=True, exist_ok=True)
            render(scene, "photo", r).save(image, format="JPEG", quality=90)
            Image.fromarray(_label_map(scene)).save(labels)
    names = ("ground",) + SHAPES
    lines = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i + 1}\t0\t0\t0\t{name}" for i, name in enumerate(names)]
    (base / "objectInfo150.csv").write_text("\n".join(lines) + "\n")


def _dump(path: Path, data: Dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
