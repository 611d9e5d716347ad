"""A task, dataset types and a table defined outside utabench, as a user's plugin module would: loaded with
UTABENCH_PLUGINS=toy_task, it runs through `utabench run` and `utabench tables` without a change to utabench; one of
its dataset types is read by a task of utabench's own (zero-shot classification)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
from pydantic import Field, PositiveInt

from utabench.core.registry import DATASETS, TASKS
from utabench.core.schema import Schema
from utabench.core.tablespec import TableSpec, register_table
from utabench.datasets.classification import ImageFolderEntry, imagefolder
from utabench.datasets.images import ImageList, dataset_root, list_images
from utabench.tasks.base import Task, TaskOutput
from utabench.tasks.features import extract


class FlatFolderEntry(Schema):
    limit: Optional[PositiveInt] = Field(None, description="read at most this many images")


class FlatFolder:
    def __init__(self, root: Path, images: List[Path]):
        self.root, self.images, self.extra, self.fingerprint = root, images, b"", ""

    @property
    def files(self) -> List[Path]:
        return self.images


@DATASETS.register("flat-folder", help="every image directly in ROOT", schema=FlatFolderEntry)
def load_flat_folder(cfg) -> FlatFolder:
    root = dataset_root(cfg.get("root"), "ROOT/*.jpg")
    return FlatFolder(root, list_images(root)[: cfg.get("limit")])


@DATASETS.register("class-folder", help="ROOT/<class>/*.jpg, read as imagefolder reads it", schema=ImageFolderEntry)
def load_class_folder(cfg):
    return imagefolder(cfg)


TASKS.get("zeroshot-classification").reads("class-folder")  # a plugin's dataset type for an existing task


class NormOptions(Schema):
    normalise: bool = Field(False, description="normalise the embeddings first (the norms are then 1)")


@TASKS.register("embedding-norm", help="the mean L2 norm of a backbone's image embeddings")
class EmbeddingNorm(Task):
    name = "embedding-norm"
    dataset_types = ("flat-folder",)
    options = NormOptions

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:
        images = ImageList([(path, 0) for path in data.images], backbone.image_transform())
        feats = extract(backbone.encode_image, images, ctx, desc="embedding norms").features
        if (options or self.options_of({}))["normalise"]:
            feats = torch.nn.functional.normalize(feats, dim=-1)
        return TaskOutput(metrics={"mean_norm": float(feats.norm(dim=-1).mean())}, num_images=len(feats),
                          model_seconds=1.0)


register_table(TableSpec(90, "Table 90: mean image-embedding norm", "paper_table1.csv",
                         (("norm", "embedding-norm", ("flat-folder",), "mean_norm"),)))
