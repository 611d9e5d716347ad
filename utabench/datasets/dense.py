"""Dense-prediction sets in their standard layouts: COCO 2017 instances, LVIS v1, ADE20K.

COCO: ROOT/annotations/instances_{train,val}2017.json + ROOT/{train,val}2017/. LVIS v1: ROOT/annotations/
lvis_v1_{train,val}.json, images addressed by `coco_url` under ROOT/{train,val}2017/ (link or copy COCO's image
folders there). ADE20K: ROOT (ADEChallengeData2016) with images/{training,validation}/*.jpg and
annotations/{training,validation}/*.png; class names from ROOT/objectInfo150.csv when present. The training split
is only required when a task trains (not with `eval_only`). Loading reads the annotation files once to check them
and to take the category list (and LVIS's per-category image counts, for the federated loss).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.datasets.images import dataset_root


@dataclass
class DenseSet:
    name: str
    type: str
    root: Path
    classes: List[str]
    val_ann: Optional[Path]
    num_val_images: int
    files: List[Path] = field(default_factory=list)  # annotation files and evaluation images, for the fingerprint
    class_image_counts: Optional[List[int]] = None
    extra: bytes = b""
    fingerprint: str = ""  # filled by the runner (core/fingerprint.py)


def _need(path: Path, layout: str) -> Path:
    if not path.exists():
        raise UtabenchError(f"{path} not found; expected {layout}")
    return path


def _categories(path: Path, layout: str):
    """(categories sorted by id, the image entries) of an instances annotation file."""
    try:
        data = json.loads(path.read_text())
        categories = sorted(data["categories"], key=lambda c: c["id"])
        if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
            raise TypeError("images / annotations must be lists")
        return categories, data["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UtabenchError(f"{path} is not an instances annotation file ({exc}); expected {layout}") from None


def _image_path(root: Path, entry: Dict[str, Any], kind: str, ann: Path, layout: str) -> Path:
    """Where mmdet reads an image: COCO's `val2017/<file_name>`, LVIS's `coco_url` path under ROOT."""
    try:
        name = (entry["coco_url"].replace("http://images.cocodataset.org/", "") if kind == "lvis"
                else f"val2017/{entry['file_name']}")
    except (KeyError, AttributeError):
        raise UtabenchError(f"{ann}: an image entry without {'coco_url' if kind == 'lvis' else 'file_name'}; "
                            f"expected {layout}") from None
    path = root / name
    if not path.is_file():
        raise UtabenchError(f"image {path} listed in {ann} is missing; expected {layout}")
    return path


def _instances(cfg: Dict[str, Any], kind: str, files: Dict[str, str], layout: str) -> DenseSet:
    root = dataset_root(cfg.get("root"), layout)
    eval_only = bool(cfg.get("eval_only"))
    anns = {split: (_need(root / rel, layout) if split == "val" or not eval_only else None)
            for split, rel in files.items()}
    for split in ("val",) if eval_only else ("train", "val"):
        _need(root / f"{split}2017", layout)
    val_categories, val_images = _categories(anns["val"], layout)
    counts = None
    if anns["train"] is not None:
        train_categories, _ = _categories(anns["train"], layout)
        if [c["name"] for c in train_categories] != [c["name"] for c in val_categories]:
            raise UtabenchError(f"{anns['train']} and {anns['val']} list different categories; expected one list")
        if kind == "lvis":
            counts = [int(c.get("image_count", 0)) for c in train_categories]
    # what the metrics depend on: the annotation files and the evaluation images (the training images are
    # covered by the training annotations; hashing 118k of them would cost minutes on a cluster's file system)
    files = [path for path in anns.values() if path is not None]
    files += [_image_path(root, entry, kind, anns["val"], layout) for entry in val_images]
    return DenseSet(name=cfg.get("name", kind), type=cfg["type"], root=root,
                    classes=[c["name"] for c in val_categories], val_ann=anns["val"],
                    num_val_images=len(val_images), files=files, class_image_counts=counts)


@DATASETS.register("coco-instances", help="COCO 2017 instances (`coco:` for detection): ROOT/annotations/instances_*2017.json + {train,val}2017/")
def load_coco_instances(cfg: Dict[str, Any]) -> DenseSet:
    layout = "ROOT/annotations/instances_{train,val}2017.json and the images in ROOT/{train,val}2017/"
    return _instances(cfg, "coco", {"train": "annotations/instances_train2017.json",
                                    "val": "annotations/instances_val2017.json"}, layout)


@DATASETS.register("lvis", help="LVIS v1: ROOT/annotations/lvis_v1_{train,val}.json + COCO images in ROOT/{train,val}2017/")
def load_lvis(cfg: Dict[str, Any]) -> DenseSet:
    layout = "ROOT/annotations/lvis_v1_{train,val}.json and the COCO 2017 images in ROOT/{train,val}2017/"
    return _instances(cfg, "lvis", {"train": "annotations/lvis_v1_train.json",
                                    "val": "annotations/lvis_v1_val.json"}, layout)


def standard_classes(kind: str) -> List[str]:
    """The class list mmdet / mmseg give a dataset kind (coco, lvis, ade20k)."""
    if kind == "ade20k":
        from mmseg.datasets import ADE20KDataset

        return list(ADE20KDataset.METAINFO["classes"])
    from mmdet.datasets import CocoDataset, LVISV1Dataset

    return list((LVISV1Dataset if kind == "lvis" else CocoDataset).METAINFO["classes"])


def _ade_classes(root: Path) -> List[str]:
    info = root / "objectInfo150.csv"
    if not info.is_file():
        return standard_classes("ade20k")
    with info.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t" if "\t" in info.read_text().splitlines()[0] else ","))
    return [row["Name"].split(";")[0].strip() for row in rows]


@DATASETS.register("ade20k", help="ADE20K (ADEChallengeData2016): ROOT/images/{training,validation}/ + ROOT/annotations/...")
def load_ade20k(cfg: Dict[str, Any]) -> DenseSet:
    layout = "ROOT/images/{training,validation}/*.jpg and ROOT/annotations/{training,validation}/*.png"
    root = dataset_root(cfg.get("root"), layout)
    splits = ("validation",) if cfg.get("eval_only") else ("training", "validation")
    stems = {}
    for split in splits:
        images = sorted(p.stem for p in _need(root / "images" / split, layout).glob("*.jpg"))
        labels = sorted(p.stem for p in _need(root / "annotations" / split, layout).glob("*.png"))
        if not images or images != labels:
            raise UtabenchError(f"{root}/images/{split} and annotations/{split} must hold the same non-empty set of "
                                f"names ({len(images)} images, {len(labels)} label maps); expected {layout}")
        stems[split] = images
    # the fingerprint reads the evaluation images and label maps; the training ones are listed by name only
    files = [root / folder / "validation" / f"{stem}{suffix}" for stem in stems["validation"]
             for folder, suffix in (("images", ".jpg"), ("annotations", ".png"))]
    return DenseSet(name=cfg.get("name", "ade20k"), type=cfg["type"], root=root, classes=_ade_classes(root),
                    val_ann=None, num_val_images=len(stems["validation"]), files=files,
                    extra="\n".join(stems.get("training", [])).encode())
