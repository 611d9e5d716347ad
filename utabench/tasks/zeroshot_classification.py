"""Zero-shot classification: logits = 100 * normalize(image) @ text classifier; top-1, top-5, mean per-class recall,
and on request DataComp's other main metrics: worst-group top-1 / top-5 by a field of the samples' metadata (a wds
set's .npy: Dollar Street's income group, GeoDE's and FMoW's region), macro F1 over the classes present (iWildCam)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt

from utabench.core.errors import NotApplicable, UtabenchError
from utabench.core.registry import TASKS
from utabench.core.schema import Schema
from utabench.core.tablespec import PAPER_FILL, TableSpec, register_table
from utabench.datasets.images import ImageList
from utabench.tasks.base import Task, TaskOutput
from utabench.tasks.bootstrap import classification_samples, multilabel_samples
from utabench.tasks.feature_cache import image_features
from utabench.tasks.group_metrics import macro_f1, worst_group_accuracy
from utabench.tasks.metrics import mean_average_precision, mean_per_class_recall, topk_accuracy
from utabench.tasks.text_classifier import zero_shot_classifier


class ZeroShotOptions(Schema):
    group_by: Optional[NonNegativeInt] = Field(None, description="also the worst group's top-1 / top-5, grouping by "
                                               "this field of the samples' metadata (a wds set's .npy)")
    f1_macro: bool = Field(False, description="also macro F1 over the classes present (DataComp's iWildCam metric)")


@TASKS.register("zeroshot-classification", help="zero-shot top-1/top-5 (Table 1): ImageNet variants, ObjectNet, "
                "ImageFolder, CLIP_benchmark wds sets")
class ZeroShotClassification(Task):
    name = "zeroshot-classification"
    cost = "evaluation"
    options = ZeroShotOptions
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
        if getattr(data, "multi_hot", None) is not None:  # a multilabel set: clip_benchmark reports mAP alone
            targets = torch.as_tensor(data.multi_hot)[feats.targets]
            return TaskOutput(metrics={"mean_average_precision": mean_average_precision(logits, targets)},
                              num_images=len(feats.indices), skipped_images=feats.skipped(len(images)),
                              model_seconds=feats.seconds,
                              samples=multilabel_samples(logits.numpy(), targets.numpy(), feats.indices.numpy()),
                              details={
                                  "num_classes": len(data.classnames), "num_templates": len(data.templates),
                                  "multilabel": True, "image_features": "cached" if feats.cached else "computed"})
        acc = topk_accuracy(logits, feats.targets, (1, 5))
        metrics = {"top1": acc[1], "mean_per_class_recall": mean_per_class_recall(logits.argmax(1), feats.targets)}
        if 5 in acc:
            metrics["top5"] = acc[5]
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        options = options or self.options_of({})
        groups = _groups(options, data, feats)
        metrics.update(_requested(options, feats, top, groups))
        return TaskOutput(
            metrics=metrics, num_images=len(feats.indices), skipped_images=feats.skipped(len(images)),
            model_seconds=feats.seconds,
            samples=classification_samples(top.numpy(), feats.targets.numpy(), feats.indices.numpy(),
                                           None if groups is None else groups.numpy()),
            details={"num_classes": len(data.classnames), "num_templates": len(data.templates),
                     "image_features": "cached" if feats.cached else "computed"},
        )


def _groups(options, data, feats) -> Optional[torch.Tensor]:
    """Each sample's value of the metadata field `group_by` names (None without one)."""
    if options["group_by"] is None:
        return None
    metadata = getattr(data, "metadata", None)
    if metadata is None or options["group_by"] >= metadata.shape[1]:
        fields = 0 if metadata is None else metadata.shape[1]
        raise UtabenchError(f"group_by {options['group_by']}: dataset {data.name} has {fields} metadata fields "
                            "per sample (a wds set's .npy)")
    return torch.as_tensor(metadata[feats.indices.numpy(), options["group_by"]])


def _requested(options, feats, top, groups) -> dict:
    """The DataComp metrics the options ask for."""
    out = {}
    if options["f1_macro"]:
        out["f1_macro"] = macro_f1(top[:, 0], feats.targets)
    if groups is not None:
        hits = top.eq(feats.targets.view(-1, 1))
        out["top1_worst_group"] = worst_group_accuracy(hits[:, 0], groups)
        if top.shape[1] >= 5:
            out["top5_worst_group"] = worst_group_accuracy(hits[:, :5].any(dim=1), groups)
    return out


register_table(TableSpec(
    1, "Table 1: zero-shot classification, top-1 (%)", "paper_table1.csv",
    tuple((label, ZeroShotClassification.name, (dataset,), "top1") for label, dataset in (
        ("IN-1K", "imagenet"), ("IN-A", "imagenet-a"), ("IN-R", "imagenet-r"), ("IN-V2", "imagenet-v2"),
        ("IN-S", "imagenet-sketch"), ("ObjectNet", "objectnet"))),
    average=True, fill=PAPER_FILL,
))
