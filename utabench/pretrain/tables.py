"""Tables 6-8 (the pretraining ablations), from the records of backbones utabench pretrained.

- Table 6 (pretraining objectives): each student (and the teacher, and contrastively fine-tuned students) with its
  objective, counted FLOPs, zero-shot top-1 and its share of the teacher's, and the downstream columns (ImageNet
  fine-tuning, COCO / LVIS box and mask AP, ADE20K mIoU) where those tasks ran for it; a student of a Table 6 config
  (`paper: {table: 6, row}` in `configs/pretrain/table6-*.yaml`) with the published row and the difference beneath.
- Tables 7 (teacher) and 8 (mask ratio and type): the students of the ablation configs (`paper: {table, row}` in
  `configs/pretrain/table7-*.yaml`, `table8-*.yaml`), each row named by its paper row, with the published row and
  the difference beneath.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

from utabench.core.published import published_table
from utabench.core.registry import TASKS
from utabench.core.tablespec import TABLES, TableSpec, register_table
from utabench.pretrain.objectives import OBJECTIVES

TABLE6_ORDER = ("fd", "mim", "uta+mim", "uta", "clip-ft", "clip")  # the paper's row order, then ours
ABLATION_TABLES = (7, 8, 9, 10, 11)  # a student whose config names a row of these is not one of Table 6's


def downstream() -> List[Tuple[str, str, str, str]]:
    """(column, task, dataset type, metric): the downstream columns of Tables 6-8, as the tasks declare them
    (`Task.ablation_columns`), left to right."""
    columns = [(c.position, c.label, name, c.dataset_type, c.metric) for name in TASKS.names()
               for c in getattr(TASKS.get(name), "ablation_columns", ())]
    return [column[1:] for column in sorted(columns)]


def table6_paper() -> Dict[str, str]:
    """Table 6's columns that the published table has: ours -> its."""
    return {"FLOPs (× FD)": "FLOPs", "ZS IN-1K": "ZS", **{name: name for name, *_ in downstream()}}


def label(objective: str) -> str:
    return OBJECTIVES.get(objective).label if objective in OBJECTIVES.names() else objective


def _scores(records: pd.DataFrame, task: str, dataset_type: str, metric: str) -> Dict[str, float]:
    """backbone -> metric, over the complete records of (task, dataset type)."""
    column = f"metrics.{metric}"
    hits = records[(records.task == task) & (records.dataset_type == dataset_type) & (records.status == "complete")]
    if column not in hits:
        return {}
    return {r.backbone: float(r[column]) for _, r in hits.iterrows() if pd.notna(r[column])}


def _pretrained(records: pd.DataFrame) -> pd.DataFrame:
    if records.empty or "pretrain.objective" not in records:
        return records.iloc[0:0]
    return records.dropna(subset=["pretrain.objective"]).drop_duplicates("backbone")


def _paper_table(row: pd.Series):
    table = row.get("pretrain.paper.table")
    return int(table) if table is not None and pd.notna(table) else None


def _pos_embed_set(row: pd.Series) -> bool:
    """Whether a record's student was pretrained without a positional embedding (Table 9's, table_pe.py)."""
    value = row.get("pretrain.pos_embed.absolute")
    return value is not None and not pd.isna(value)


def _teacher_of(records: pd.DataFrame) -> Dict[str, str]:
    """A pretrained backbone's teacher (or the student it fine-tuned) as a backbone name, where it was evaluated."""
    by_checkpoint = {r["provenance.backbone.checkpoint"]: r.backbone for _, r in records.iterrows()
                     if isinstance(r.get("provenance.backbone.checkpoint"), str)}
    return {r.backbone: by_checkpoint.get(r.get("pretrain.teacher")) or by_checkpoint.get(r.get("pretrain.init"))
            for _, r in _pretrained(records).iterrows()}


def _downstream(records: pd.DataFrame, backbone: str) -> Dict[str, float]:
    return {name: _scores(records, task, kind, metric).get(backbone) for name, task, kind, metric in downstream()}


def _paper_and_delta(table: int, row: str, ours: Dict[str, Any], names: Dict[str, str]) -> Tuple[dict, dict]:
    """Row `row` of published Table `table` and ours − paper (signed text), in our column names (`names`: ours ->
    the published table's). FLOPs are shown, not differenced."""
    published = published_table(f"paper_table{table}.csv").set_index("config")
    paper = {c: float(published.loc[row, p]) if p in published and pd.notna(published.loc[row, p]) else None
             for c, p in names.items()}
    delta = {c: f"{ours[c] - paper[c]:+.1f}" if p != "FLOPs" and ours.get(c) is not None and paper[c] is not None
             else None for c, p in names.items()}
    return paper, delta


def objective_rows(records: pd.DataFrame) -> List[dict]:
    """Table 6: one row per pretrained backbone outside the ablations (Tables 7-11); a student whose config names its
    Table 6 row, then the published row and the difference."""
    pretrained = _pretrained(records)
    if pretrained.empty:
        return []
    zero_shot = [datasets[0] for _, _, datasets, _ in TABLES.get("1").columns]  # Table 1's six sets
    top1 = {kind: _scores(records, "zeroshot-classification", kind, "top1") for kind in zero_shot}
    flops = {r["pretrain.objective"]: r.get("pretrain.flops.student_per_image") for _, r in pretrained.iterrows()}
    fd, teachers = flops.get("fd"), _teacher_of(records)
    rows: List[Tuple[dict, Optional[str]]] = []  # (ours, the Table 6 row its config names)
    for _, r in pretrained.iterrows():
        if _paper_table(r) in ABLATION_TABLES or _pos_embed_set(r) or r["pretrain.objective"] == "text-uta":
            continue  # (text UTA's students are Table 10's, table_text.py)
        backbone = r.backbone
        scores = [top1[kind].get(backbone) for kind in zero_shot]
        teacher = teachers.get(backbone)
        if r["pretrain.objective"] == "clip-ft":  # a fine-tuned student: its student's teacher
            teacher = teachers.get(teacher)
        own, theirs = top1["imagenet"].get(backbone), top1["imagenet"].get(teacher)
        student_flops = r.get("pretrain.flops.student_per_image")
        ours = {"table": 6, "backbone": backbone, "objective": label(r["pretrain.objective"]),
                "from": teachers.get(backbone) or "",
                "student GFLOPs/img": student_flops / 1e9 if pd.notna(student_flops) else None,
                "FLOPs (× FD)": student_flops / fd if fd and pd.notna(student_flops) else None,
                "ZS IN-1K": own,
                "ZS avg": sum(scores) / len(scores) if all(s is not None for s in scores) else None,
                "% of teacher": 100 * own / theirs if own is not None and theirs else None,
                **_downstream(records, backbone)}
        rows.append((ours, str(r["pretrain.paper.row"]) if _paper_table(r) == 6 else None))
    order = [OBJECTIVES.get(name).label for name in TABLE6_ORDER]
    rows.sort(key=lambda item: (order.index(item[0]["objective"]) if item[0]["objective"] in order else 99,
                                item[0]["backbone"]))
    out = []
    for ours, row in rows:
        out.append(ours)
        if row is not None:
            paper, delta = _paper_and_delta(6, row, ours, table6_paper())
            blank = {key: None for key in ours} | {"table": 6, "objective": "", "from": ""}
            out += [{**blank, "backbone": "↳ paper", "objective": row, **paper},
                    {**blank, "backbone": "↳ Δ (ours − paper)", **delta}]
    return out


def ablation_rows(table: int, columns: Tuple[str, ...]):
    """Tables 7 / 8: one row per backbone whose pretraining config names a row of `table`, then the published row
    and the difference in the columns both have."""
    def rows(records: pd.DataFrame) -> List[dict]:
        pretrained = _pretrained(records)
        chosen = pretrained[[_paper_table(r) == table for _, r in pretrained.iterrows()]] if len(pretrained) else []
        if not len(chosen):
            return []
        zs, teachers = _scores(records, "zeroshot-classification", "imagenet", "top1"), _teacher_of(records)
        unmasked = [r.get("pretrain.flops.student_per_image") for _, r in pretrained.iterrows()
                    if r["pretrain.objective"] == "fd" or str(r.get("pretrain.paper.row")) == "ratio 0.0"]
        out = []
        for _, r in sorted(chosen.iterrows(), key=lambda item: str(item[1]["pretrain.paper.row"])):
            flops = r.get("pretrain.flops.student_per_image")
            ours = {"teacher ZS": zs.get(teachers.get(r.backbone)), "ZS": zs.get(r.backbone),
                    "FLOPs": flops / unmasked[0] if unmasked and pd.notna(flops) and unmasked[0] else None,
                    **_downstream(records, r.backbone)}
            ours = {c: ours.get(c) for c in columns}
            row = str(r["pretrain.paper.row"])
            paper, delta = _paper_and_delta(table, row, ours, {c: c for c in columns})
            out += [{"table": table, "row": row, "backbone": r.backbone, **ours},
                    {"table": table, "row": "↳ paper", "backbone": "", **paper},
                    {"table": table, "row": "↳ Δ (ours − paper)", "backbone": "", **delta}]
        return out
    return rows


def ablation_fill(table: int, example: str) -> str:
    """How Table 7 or 8 gets its rows: students of its pretraining configs, named in a run config."""
    return (f"name the students of utabench/configs/pretrain/table{table}-*.yaml as backbones of a run config, e.g. "
            f"`{{name: table{table}-{example}, pretrain: table{table}-{example}.yaml}}`, then `utabench run-all "
            "--config THAT.yaml` (the paper's recipe, uta-b14.yaml: ImageNet-21K and the teacher's weights); the "
            "embedded world has no miniature of it")


register_table(TableSpec(
    6, "Table 6: pretraining objectives (students distilled by utabench): zero-shot and downstream (%)",
    "paper_table6.csv", rows=objective_rows, formats={"student GFLOPs/img": "{:.4f}", "FLOPs (× FD)": "{:.2f}×"},
    published_note="; ViT-B, 90 epochs on ImageNet-21K; MIM has no zero-shot",
))
register_table(TableSpec(
    7, "Table 7: the teacher CLIP model (students of configs/pretrain/table7-*.yaml), top-1 / AP / mIoU (%)",
    "paper_table7.csv", rows=ablation_rows(7, ("teacher ZS", "ZS", "FT", "COCO APbox", "COCO APmask",
                                                "ADE20K mIoU")),
    published_note="; ViT-B/14 students, 90 epochs", fill=ablation_fill(7, "clip-l14"),
))
register_table(TableSpec(
    8, "Table 8: mask ratio and type (students of configs/pretrain/table8-*.yaml), top-1 / AP / mIoU (%)",
    "paper_table8.csv", rows=ablation_rows(8, ("FLOPs", "ZS", "FT", "COCO APbox", "COCO APmask", "ADE20K mIoU")),
    formats={"FLOPs": "{:.2f}×"}, published_note="; ViT-B/14 students, 90 epochs; FLOPs relative to the unmasked "
    "student", fill=ablation_fill(8, "ratio-0.4"),
))
