"""Table 6 (pretraining objectives) for the students utabench pretrained: objective, student FLOPs, zero-shot top-1
and the share of the teacher's, beside the published table."""

from __future__ import annotations

from typing import List

import pandas as pd

from utabench.core.tablespec import TABLES, TableSpec, register_table
from utabench.pretrain.objectives import OBJECTIVES

TABLE6_ORDER = ("fd", "mim", "uta+mim", "uta", "clip")  # the paper's row order, then the teacher


def label(objective: str) -> str:
    return OBJECTIVES.get(objective).label if objective in OBJECTIVES.names() else objective


def ablation_rows(records: pd.DataFrame) -> List[dict]:
    """One row per pretrained backbone: objective, counted FLOPs (student forward+backward per image, and relative
    to FD's), zero-shot top-1 on IN-1K and over the six sets, and IN-1K as a share of its teacher's."""
    if records.empty or "pretrain.objective" not in records:
        return []
    zero_shot = [datasets[0] for _, _, datasets, _ in TABLES.get("1").columns]  # Table 1's six sets
    zs = records[(records.task == "zeroshot-classification") & (records.status == "complete")]
    top1 = {(r.backbone, r.dataset_type): r["metrics.top1"] for _, r in zs.iterrows()}
    by_checkpoint = {r["provenance.backbone.checkpoint"]: r.backbone for _, r in records.iterrows()
                     if isinstance(r.get("provenance.backbone.checkpoint"), str)}
    pretrained = records.dropna(subset=["pretrain.objective"]).drop_duplicates("backbone")
    flops = {r["pretrain.objective"]: r.get("pretrain.flops.student_per_image") for _, r in pretrained.iterrows()}
    fd = flops.get("fd")
    rows = []
    for _, r in pretrained.iterrows():
        objective, backbone = r["pretrain.objective"], r.backbone
        scores = [top1.get((backbone, d)) for d in zero_shot]
        teacher = by_checkpoint.get(r.get("pretrain.teacher"))
        own, theirs = top1.get((backbone, "imagenet")), top1.get((teacher, "imagenet"))
        student_flops = r.get("pretrain.flops.student_per_image")
        rows.append({"table": 6, "backbone": backbone, "objective": label(objective),
                     "teacher": teacher or "",
                     "student GFLOPs/img": student_flops / 1e9 if pd.notna(student_flops) else None,
                     "FLOPs (× FD)": student_flops / fd if fd and pd.notna(student_flops) else None,
                     "ZS IN-1K": own,
                     "ZS avg": sum(scores) / len(scores) if all(s is not None for s in scores) else None,
                     "% of teacher": 100 * own / theirs if own is not None and theirs else None})
    order = [OBJECTIVES.get(name).label for name in TABLE6_ORDER]
    return sorted(rows, key=lambda row: (order.index(row["objective"]) if row["objective"] in order else 99,
                                         row["backbone"]))


register_table(TableSpec(
    6, "Table 6: pretraining objectives (students distilled by utabench), zero-shot top-1 (%)", "paper_table6.csv",
    rows=ablation_rows, formats={"student GFLOPs/img": "{:.4f}", "FLOPs (× FD)": "{:.2f}×"},
    published_note="; ViT-B, 90 epochs on ImageNet-21K; MIM has no zero-shot",
))
