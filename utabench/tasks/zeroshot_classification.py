"""Zero-shot classification: logits = 100 * normalize(image) @ text classifier; top-1, top-5, mean per-class recall."""

from __future__ import annotations

import torch.nn.functional as F

from utabench.core.errors import NotApplicable
from utabench.core.registry import TASKS
from utabench.core.tablespec import PAPER_FILL, TableSpec, register_table
from utabench.datasets.images import ImageList
from utabench.tasks.base import Task, TaskOutput
from utabench.tasks.bootstrap import classification_samples
from utabench.tasks.feature_cache import image_features
from utabench.tasks.metrics import mean_per_class_recall, topk_accuracy
from utabench.tasks.text_classifier import zero_shot_classifier


@TASKS.register("zeroshot-classification", help="zero-shot top-1/top-5 (Table 1): ImageNet variants, ObjectNet, ImageFolder")
class ZeroShotClassification(Task):
    name = "zeroshot-classification"
    cost = "evaluation"
    reads_kind = "classification"
    dataset_types = ("imagenet", "imagenet-a", "imagenet-r", "imagenet-v2", "imagenet-sketch", "objectnet",
                     "imagefolder", "wds")

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:
        if not backbone.zero_shot_ready:
            raise NotApplicable(f"{backbone.spec.key} has no joint image-text space with a text tower")
        classifier = zero_shot_classifier(backbone, data.classnames, data.templates, ctx)
        images = ImageList(data.samples, backbone.image_transform(), ctx.skip_corrupt)
        feats = image_features(backbone, images, ctx, f"{data.name}")
        logits = 100.0 * F.normalize(feats.features, dim=-1) @ classifier
        acc = topk_accuracy(logits, feats.targets, (1, 5))
        metrics = {"top1": acc[1], "mean_per_class_recall": mean_per_class_recall(logits.argmax(1), feats.targets)}
        if 5 in acc:
            metrics["top5"] = acc[5]
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        return TaskOutput(
            metrics=metrics, num_images=len(feats.indices), skipped_images=feats.skipped(len(images)),
            model_seconds=feats.seconds,
            samples=classification_samples(top.numpy(), feats.targets.numpy(), feats.indices.numpy()),
            details={"num_classes": len(data.classnames), "num_templates": len(data.templates),
                     "image_features": "cached" if feats.cached else "computed"},
        )


register_table(TableSpec(
    1, "Table 1: zero-shot classification, top-1 (%)", "paper_table1.csv",
    tuple((label, ZeroShotClassification.name, (dataset,), "top1") for label, dataset in (
        ("IN-1K", "imagenet"), ("IN-A", "imagenet-a"), ("IN-R", "imagenet-r"), ("IN-V2", "imagenet-v2"),
        ("IN-S", "imagenet-sketch"), ("ObjectNet", "objectnet"))),
    average=True, fill=PAPER_FILL,
))
