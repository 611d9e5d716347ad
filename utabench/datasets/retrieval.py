"""Image-text retrieval sets from Karpathy-split annotation files: Flickr30k (1k test) and COCO (5k test).

Layouts: ROOT/dataset_flickr30k.json + ROOT/flickr30k-images/<filename>; ROOT/dataset_coco.json +
ROOT/<filepath>/<filename> (val2014/...). The annotation file is Karpathy's: {"images": [{"filename", "filepath"?,
"split", "sentences": [{"raw": ...}]}]}; another path can be given with `annotations:`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from pydantic import Field

from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.core.schema import Schema
from utabench.datasets.images import dataset_root


class KarpathyEntry(Schema):
    annotations: Optional[str] = Field(None, description="Karpathy annotation file (default ROOT/dataset_<name>.json)")
    split: Literal["test", "val", "train", "restval"] = Field("test", description="the split evaluated (default test)")


@dataclass
class RetrievalSet:
    name: str
    type: str
    root: Path
    images: List[Path]
    captions: List[List[str]]  # captions[i] are the positives of images[i]
    extra: bytes = b""  # the annotation file and split, for the fingerprint
    fingerprint: str = ""  # filled by the runner (core/fingerprint.py)
    kind = "retrieval"  # what a task reads from it (a `wds` set is one or the other)

    @property
    def files(self) -> List[Path]:
        return self.images


def _karpathy(cfg: Dict[str, Any], type_: str, default_ann: str, image_dirs) -> RetrievalSet:
    layout = f"ROOT/{default_ann} (Karpathy splits) and the images under ROOT/{'|'.join(image_dirs) or '<filepath>'}"
    root = dataset_root(cfg.get("root"), layout)
    ann = Path(cfg.get("annotations") or root / default_ann)
    if not ann.is_file():
        raise UtabenchError(f"{ann} not found; expected {layout}")
    try:
        entries = json.loads(ann.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UtabenchError(f"{ann} is not a Karpathy annotation file ({type(exc).__name__}: {exc}); "
                            f"expected {{\"images\": [{{\"filename\", \"split\", \"sentences\"}}]}}") from None
    split = cfg.get("split", "test")
    images, captions = [], []
    for entry in entries:
        if entry.get("split") != split:
            continue
        if entry.get("filepath"):
            path = root / entry["filepath"] / entry["filename"]
        else:
            candidates = [root / d / entry["filename"] for d in image_dirs] + [root / entry["filename"]]
            path = next((c for c in candidates if c.is_file()), candidates[0])
        if not path.is_file():
            raise UtabenchError(f"image {path} listed in {ann} is missing; expected {layout}")
        images.append(path)
        captions.append([s["raw"].strip() for s in entry["sentences"]])
    if not images:
        raise UtabenchError(f"{ann} has no images in split {split!r}")
    return RetrievalSet(name=cfg.get("name", type_), type=type_, root=root, images=images, captions=captions,
                        extra=ann.read_bytes() + split.encode())


@DATASETS.register("flickr30k", help="Flickr30k Karpathy test (1k): ROOT/dataset_flickr30k.json + flickr30k-images/",
                   schema=KarpathyEntry)
def flickr30k(cfg):
    return _karpathy(cfg, "flickr30k", "dataset_flickr30k.json", ("flickr30k-images", "images"))


@DATASETS.register("coco", help="COCO Karpathy test (5k): ROOT/dataset_coco.json + ROOT/<filepath>/<filename>",
                   schema=KarpathyEntry)
def coco(cfg):
    return _karpathy(cfg, "coco", "dataset_coco.json", ())
