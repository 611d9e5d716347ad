"""What the probes (linear-probe, few-shot, knn) share: a dataset entry read as a train split and a test split, and
their frozen image features from the feature cache.

A folder type (`imagenet`, `imagefolder`) reads ROOT/<train_split> and ROOT/<test_split> with its registered reader;
a type whose schema takes a `split` (a `wds` export) is read twice with `split` set. The test split's labels are
mapped onto the train split's classes by class id (wnid or folder name), so two ImageFolder splits with different
folder sets still agree; a test class the train split lacks is refused.

Features are `backbone.encode_image` (for a CLIP-style backbone the projected embedding, as CLIP_benchmark's probe
uses; a UTA student's is its head's output with or without a text tower). An image-only encoder without one (timm's
EVA-02 MIM) gives its tower's own output instead: timm's pooled pre-logits features after the final norm. Both are
read through `tasks/feature_cache.py` (the tower's under a key of its own): a second probe on the same backbone and
split encodes no image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Tuple

import torch
from pydantic import BeforeValidator, Field, NonNegativeInt, PositiveInt

from utabench.backbones.base import Backbone
from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.core.schema import Schema
from utabench.datasets.classification import ClassificationSet
from utabench.datasets.images import ImageList
from utabench.tasks.base import Task
from utabench.tasks.feature_cache import image_features
from utabench.tasks.features import Features

FOLDER_TYPES = ("imagenet", "imagefolder")
# a `wds` export (datasets/wds.py) takes its split as a key; read when that type is registered
PROBE_TYPES = FOLDER_TYPES + ("wds",)


def _listed(value: Any) -> Any:
    """A list given as text (a command-line flag: `--ks 10,20`) or as one number."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [value] if isinstance(value, int) else value


Counts = Annotated[List[PositiveInt], BeforeValidator(_listed)]
Seeds = Annotated[List[NonNegativeInt], BeforeValidator(_listed)]


class SplitOptions(Schema):
    train_split: str = Field("train", description="the split the probe is fitted on: ROOT/<train_split> "
                             "(default train)")
    test_split: Optional[str] = Field(None, description="the split it is scored on: ROOT/<test_split> (default: val "
                                      "for imagenet / imagefolder, test for a set whose type takes a split, as wds)")


@dataclass
class ProbeSets:
    """A train and a test split of one dataset entry; `root`, `files`, `extra`, `fingerprint` for the runner."""

    name: str
    type: str
    root: Path
    train: ClassificationSet
    test: ClassificationSet
    splits: Tuple[str, str]
    fingerprint: str = ""

    @property
    def files(self) -> List[Path]:
        return list(self.train.files) + list(self.test.files)

    @property
    def extra(self) -> bytes:
        train, test = self.splits
        return (f"train:{train}\0".encode() + self.train.extra + f"\0test:{test}\0".encode() + self.test.extra)

    @property
    def num_classes(self) -> int:
        return len(self.train.classnames)


def takes_split(dataset_type: str) -> bool:
    schema = DATASETS.schema(dataset_type) or Schema
    return "split" in schema.keys()


def _aligned(train: ClassificationSet, test: ClassificationSet, where: str) -> ClassificationSet:
    """`test` with its labels in `train`'s label space (by class id when both have them)."""
    if train.class_ids and test.class_ids:
        if train.class_ids == test.class_ids:
            return test
        index = {class_id: label for label, class_id in enumerate(train.class_ids)}
        unknown = sorted({test.class_ids[y] for _, y in test.samples if test.class_ids[y] not in index})
        if unknown:
            raise UtabenchError(f"{where}: the test split has classes the train split lacks: "
                                f"{', '.join(unknown[:5])}; a probe scores the train split's classes")
        samples = [(path, index[test.class_ids[y]]) for path, y in test.samples]
        return replace(test, samples=samples, classnames=train.classnames, class_ids=train.class_ids)
    if len(train.classnames) != len(test.classnames):
        raise UtabenchError(f"{where}: the train split has {len(train.classnames)} classes, the test split "
                            f"{len(test.classnames)}; they must share one label space")
    return test


class ProbeTask(Task):
    """A probe: evaluation only, on the train and test splits of a classification set (`load_splits`)."""

    cost = "evaluation"
    dataset_types = PROBE_TYPES

    def load(self, dataset_cfg):
        return load_splits(self, dataset_cfg)


def load_splits(task, dataset_cfg: Dict[str, Any]) -> ProbeSets:
    """`task.load` of a probe: the entry's train and test splits, checked."""
    cfg = task.entry(dataset_cfg)
    cfg["type"] = task.dataset_aliases.get(cfg["type"], cfg["type"])
    options = task.options_of(cfg)
    reader = DATASETS.get(cfg["type"])
    by_key = takes_split(cfg["type"])
    train_split = options["train_split"]
    test_split = options["test_split"] or ("test" if by_key else "val")
    where = f"task {task.name}, dataset {cfg['name']}"
    if train_split == test_split:
        raise UtabenchError(f"{where}: train_split and test_split are both {train_split!r}; a probe is scored on "
                            "images it was not fitted on")
    reader_cfg = {k: v for k, v in cfg.items() if k not in task.options.keys()}
    sets = []
    for split in (train_split, test_split):
        if by_key:
            sets.append(reader({**reader_cfg, "split": split}))
            continue
        root = Path(str(cfg.get("root") or "")).expanduser()
        if not cfg.get("root") or not (root / split).is_dir():
            raise UtabenchError(f"{where}: {root / split} does not exist; a probe reads a train and a test split, "
                                f"ROOT/{train_split} and ROOT/{test_split} (set train_split / test_split)")
        sets.append(reader({**reader_cfg, "root": str(root / split)}))
    for split, part in zip((train_split, test_split), sets):
        kind = getattr(part, "kind", "classification")
        if kind != "classification":
            raise UtabenchError(f"{where}: split {split} is a {kind} set; a probe reads classification sets")
        if getattr(part, "multi_hot", None) is not None:
            raise UtabenchError(f"{where}: split {split} is a multilabel set; a probe reads one label an image")
    train, test = sets
    test = _aligned(train, test, where)
    root = Path(str(cfg["root"])).expanduser()
    return ProbeSets(name=cfg["name"], type=cfg["type"], root=root, train=train, test=test,
                     splits=(train_split, test_split))


@dataclass
class SplitFeatures:
    train: Features
    test: Features
    num_images: int
    skipped_images: int
    described: str  # which features, for the record

    @property
    def seconds(self) -> float:
        return self.train.seconds + self.test.seconds

    @property
    def cached(self) -> str:
        hits = (self.train.cached, self.test.cached)
        return "cached" if all(hits) else "computed" if not any(hits) else "train cached" if hits[0] else "test cached"


class TowerFeatures:
    """An image-only backbone (no `encode_image` of its own) seen through its vision tower's output as
    `encode_image`, with a weights fingerprint of its own so that the feature cache keeps the two apart."""

    def __init__(self, backbone):
        self.backbone, self.spec, self.tower = backbone, backbone.spec, backbone.vision_tower()

    def image_transform(self):
        return self.backbone.image_transform()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.tower(images)

    def weights_fingerprint(self) -> str:
        return hashlib.sha256(f"{self.backbone.weights_fingerprint()}:vision_tower".encode()).hexdigest()


def feature_source(backbone) -> Tuple[Any, str]:
    """What encodes a probe's images, and its description for the record."""
    if isinstance(backbone, Backbone) and type(backbone).encode_image is Backbone.encode_image:
        return TowerFeatures(backbone), "vision tower output (image-only; timm: pooled pre-logits), L2-normalised"
    return backbone, "encode_image, L2-normalised"


def split_features(backbone, data: ProbeSets, ctx) -> SplitFeatures:
    """Both splits' features (float32, not normalised; see `feature_source`), through the feature cache."""
    backbone, described = feature_source(backbone)
    out = []
    skipped = kept = 0
    for split, part in zip(data.splits, (data.train, data.test)):
        images = ImageList(part.samples, backbone.image_transform(), ctx.skip_corrupt)
        feats = image_features(backbone, images, ctx, f"{data.name} {split}")
        kept += len(feats.indices)
        skipped += feats.skipped(len(images))
        out.append(feats)
    if not len(out[0].indices) or not len(out[1].indices):
        raise UtabenchError(f"dataset {data.name}: a split has no readable image")
    return SplitFeatures(out[0], out[1], kept, skipped, described)


def num_outputs(targets: torch.Tensor) -> int:
    """CLIP_benchmark's class count of a probe: the largest training label + 1."""
    return int(targets.max()) + 1
