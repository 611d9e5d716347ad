"""Semantic segmentation (Table 4, ADE20K): UperNet through mmseg, mIoU (and mAcc, aAcc) in % from mmseg's IoUMetric."""

from __future__ import annotations

import numpy as np

from utabench.core.errors import UtabenchError
from utabench.core.registry import TASKS
from utabench.core.tablespec import AblationColumn, TableSpec, register_table
from utabench.tasks.bootstrap import iou_samples
from utabench.tasks.dense import DenseTask


@TASKS.register("segmentation", help="UperNet fine-tuning (Table 4): mIoU on ADE20K (mmseg)")
class Segmentation(DenseTask):
    name = "segmentation"
    dataset_types = ("ade20k",)
    kind_of_type = {"ade20k": "ade20k"}
    training_stage = "segmentor"
    ablation_columns = (AblationColumn("ADE20K mIoU", "ade20k", "mIoU", 6),)

    def run(self, backbone, data, ctx, options=None):
        """DenseTask's run, with each test image's areas (when the recipe's metric is mmseg's IoUMetric) as the
        record's per-sample outcomes."""
        if ctx.work_dir is None:
            return super().run(backbone, data, ctx, options)
        from utabench.dense.recipe import areas_file

        kept = areas_file(ctx.work_dir)
        if ctx.dist.is_main:
            kept.unlink(missing_ok=True)  # an earlier test's, in a resumed work directory
        out = super().run(backbone, data, ctx, options)
        if kept.is_file():
            with np.load(kept, allow_pickle=False) as areas:
                out.samples = iou_samples(**{name: areas[name] for name in areas.files})
        return out

    def metrics(self, raw, kind):
        return {name: round(float(raw[name]), 2) for name in ("mIoU", "mAcc", "aAcc") if name in raw}  # mmseg: 2 places

    def check_backbone(self, cfg, backbone) -> None:
        patch = self.patch_size(cfg, backbone)
        largest = max(cfg.model.neck.rescales)
        if patch % largest:
            raise UtabenchError(
                f"patch size {patch} does not divide by the feature pyramid's x{largest:g} upsampling, so its finest "
                "level would not sit on whole pixels; set the backbone's `patch_size` (e.g. 16, which converts the "
                "checkpoint) or use a recipe made for this patch size"
            )


register_table(TableSpec(
    4, "Table 4: ImageNet top-1 zero-shot and fine-tuned (%), ADE20K segmentation mIoU (%, UperNet)",
    "paper_table4.csv",
    (("IN-1K ZS", "zeroshot-classification", ("imagenet",), "top1"),
     ("IN-1K FT", "finetune-classification", ("imagenet",), "top1"),
     ("ADE20K mIoU", Segmentation.name, ("ade20k",), "mIoU")),
    rows_from=(Segmentation.name, "finetune-classification"),
    footnote="Table 4's caption: \"† denotes the model after contrastive fine-tuning. ‡ indicates the results equal to "
    "random choice without contrastive fine-tuning.\"",
))
