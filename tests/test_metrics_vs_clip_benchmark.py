"""Our zero-shot classification and retrieval metrics equal clip_benchmark's on the same model and data.

clip_benchmark reads the data through its own loaders (torchvision ImageFolder, its ObjectNetDataset, a caption
list) and computes its metrics with its own code; the models are seeded random members of each adapter family,
chosen so that their predictions are spread over several classes (the comparison then means something).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from clip_benchmark.datasets.builder import image_captions_collate_fn
from clip_benchmark.datasets.objectnet import ObjectNetDataset
from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from utabench.backbones import build_backbone
from utabench.core.registry import DATASETS
from utabench.tasks.retrieval import Retrieval
from utabench.tasks.zeroshot_classification import ZeroShotClassification

BACKBONES = [
    {"spec": "clip:utabench-clip-tiny", "seed": 1},
    {"spec": "uta:tiny", "seed": 3},
    {"spec": "eva02:utabench-eva02-clip-tiny", "image_size": 56, "seed": 1},
]


def _clip_benchmark_classification(backbone, dataset, classnames, templates):
    loader = DataLoader(dataset, batch_size=7)
    theirs = zeroshot_classification.evaluate(backbone, loader, backbone.tokenize, classnames, templates, "cpu",
                                              amp=False)
    return {"top1": 100 * theirs["acc1"], "top5": 100 * theirs["acc5"],
            "mean_per_class_recall": 100 * theirs["mean_per_class_recall"]}


def _assert_same(ours, theirs):
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("entry", BACKBONES, ids=lambda e: e["spec"])
def test_zero_shot_classification_equals_clip_benchmark(world, ctx, entry):
    backbone = build_backbone(entry)
    data = DATASETS.get("imagenet")({"root": str(world / "imagenet"), "classes": str(world / "classes.json"),
                                     "name": "imagenet-1k"})
    ours = ZeroShotClassification().run(backbone, data, ctx).metrics
    dataset = ImageFolder(str(world / "imagenet" / "val"), transform=backbone.image_transform())
    theirs = _clip_benchmark_classification(backbone, dataset, data.classnames, data.templates)
    _assert_same(ours, theirs)
    # the model's predictions are spread over several classes
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        from utabench.tasks.text_classifier import zero_shot_classifier
        logits = F.normalize(backbone.encode_image(images), dim=-1) @ zero_shot_classifier(
            backbone, data.classnames, data.templates, ctx)
    assert len(torch.unique(logits.argmax(1))) >= 3


def test_objectnet_equals_clip_benchmark(world, ctx, tmp_path):
    backbone = build_backbone(BACKBONES[2])
    data = DATASETS.get("objectnet")({"root": str(world / "objectnet"), "name": "objectnet"})
    ours = ZeroShotClassification().run(backbone, data, ctx).metrics
    # clip_benchmark wants the mapping files in the root, as its download step copies them
    root = tmp_path / "objectnet"
    shutil.copytree(world / "objectnet", root)
    for mapping in (root / "objectnet-1.0" / "mappings").iterdir():
        shutil.copy(mapping, root / mapping.name)
    dataset = ObjectNetDataset(root=str(root), transform=backbone.image_transform())
    assert dataset.classes == data.classnames and len(dataset) == len(data.samples)
    assert "lamp" not in data.classnames  # the unmapped ObjectNet class is left out
    theirs = _clip_benchmark_classification(backbone, dataset, dataset.classes, data.templates)
    _assert_same(ours, theirs)


class _KarpathyCaptions(Dataset):
    """An independent reader of a Karpathy annotation file: (image, [captions]) of the test split."""

    def __init__(self, root, annotation, transform):
        entries = json.loads((root / annotation).read_text())["images"]
        self.items = [(root / e.get("filepath", "flickr30k-images") / e["filename"],
                       [s["raw"] for s in e["sentences"]]) for e in entries if e["split"] == "test"]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, caps = self.items[i]
        return self.transform(Image.open(path).convert("RGB")), caps


@pytest.mark.parametrize("entry", BACKBONES, ids=lambda e: e["spec"])
@pytest.mark.parametrize("name,annotation", [("flickr30k", "dataset_flickr30k.json"), ("coco", "dataset_coco.json")])
def test_retrieval_equals_clip_benchmark(world, ctx, entry, name, annotation):
    backbone = build_backbone(entry)
    data = DATASETS.get(name)({"root": str(world / name), "name": name})
    ours = Retrieval().run(backbone, data, ctx).metrics
    dataset = _KarpathyCaptions(world / name, annotation, backbone.image_transform())
    loader = DataLoader(dataset, batch_size=5, collate_fn=image_captions_collate_fn)
    theirs = zeroshot_retrieval.evaluate(backbone, loader, backbone.tokenize, "cpu", amp=False,
                                         recall_k_list=[1, 5, 10])
    # clip_benchmark averages in float32 (ours counts exactly); one query of difference would be >= 100/len >> 1e-4
    for k in (1, 5, 10):
        assert ours[f"image_r{k}"] == pytest.approx(100 * theirs[f"image_retrieval_recall@{k}"], abs=1e-4)
        assert ours[f"text_r{k}"] == pytest.approx(100 * theirs[f"text_retrieval_recall@{k}"], abs=1e-4)
    assert 0 < ours["image_r10"] < 100
