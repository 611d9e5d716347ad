"""Object detection and instance segmentation (Table 5): Cascade Mask R-CNN through mmdet on COCO (pycocotools via
mmdet's CocoMetric) and LVIS v1 (the lvis package via LVISMetric); box and mask AP in %."""

from __future__ import annotations

from utabench.core.errors import UtabenchError
from utabench.core.registry import TASKS
from utabench.core.tablespec import AblationColumn, TableSpec, register_table
from utabench.tasks.dense import DenseTask

_COCO = {"box_ap": "bbox_mAP", "box_ap50": "bbox_mAP_50", "box_ap75": "bbox_mAP_75", "box_aps": "bbox_mAP_s",
         "box_apm": "bbox_mAP_m", "box_apl": "bbox_mAP_l", "mask_ap": "segm_mAP", "mask_ap50": "segm_mAP_50",
         "mask_ap75": "segm_mAP_75"}
_LVIS = {"box_ap": "bbox_AP", "box_ap50": "bbox_AP50", "box_ap75": "bbox_AP75", "box_apr": "bbox_APr",
         "box_apc": "bbox_APc", "box_apf": "bbox_APf", "mask_ap": "segm_AP", "mask_ap50": "segm_AP50",
         "mask_apr": "segm_APr", "mask_apc": "segm_APc", "mask_apf": "segm_APf"}


def detection_metrics(raw, kind: str):
    """mmdet's metric names (fractions) -> ours (%). An AP the evaluator marks -1 (no ground truth of that size or
    frequency) is left out; a model with no detection at all (the evaluator then reports nothing) has AP 0."""
    names, prefix = (_LVIS, "lvis") if kind == "lvis" else (_COCO, "coco")
    if not any(key.startswith(f"{prefix}/") for key in raw):
        return {"box_ap": 0.0, "mask_ap": 0.0}
    return {ours: round(100.0 * float(raw[f"{prefix}/{theirs}"]), 4) for ours, theirs in names.items()
            if f"{prefix}/{theirs}" in raw and float(raw[f"{prefix}/{theirs}"]) >= 0}


@TASKS.register("detection", help="Cascade Mask R-CNN fine-tuning (Table 5): box / mask AP on COCO or LVIS v1 (mmdet)")
class Detection(DenseTask):
    name = "detection"
    dataset_types = ("coco-instances", "lvis")
    dataset_aliases = {"coco": "coco-instances"}
    kind_of_type = {"coco-instances": "coco", "lvis": "lvis"}
    training_stage = "detector"
    ablation_columns = tuple(AblationColumn(f"{kind.upper()} AP{what}", kind, f"{what}_ap", position)
                             for position, (kind, what) in enumerate(
                                 (("coco", "box"), ("coco", "mask"), ("lvis", "box"), ("lvis", "mask")), start=2))

    def metrics(self, raw, kind):
        return detection_metrics(raw, kind)

    def check_backbone(self, cfg, backbone) -> None:
        patch = self.patch_size(cfg, backbone)
        scales = cfg.model.neck.scale_factors
        strides = [patch / s for s in scales]
        expected = list(cfg.model.roi_head.bbox_roi_extractor.featmap_strides)
        if any(s != int(s) for s in strides) or [int(s) for s in strides] != expected[:len(strides)]:
            shown = ", ".join(f"{s:g}" for s in strides)
            raise UtabenchError(
                f"patch size {patch} gives feature strides {shown} through the pyramid's scales {list(scales)}, but "
                f"the recipe's RoI heads expect strides {expected}; set the backbone's `patch_size` (e.g. 16, which "
                "converts the checkpoint) or use a recipe made for this patch size"
            )


register_table(TableSpec(
    5, "Table 5: detection and instance segmentation, AP (%, Cascade Mask R-CNN)", "paper_table5.csv",
    (("COCO APbox", Detection.name, ("coco",), "box_ap"), ("COCO APmask", Detection.name, ("coco",), "mask_ap"),
     ("LVIS APbox", Detection.name, ("lvis",), "box_ap"), ("LVIS APmask", Detection.name, ("lvis",), "mask_ap")),
))
