"""Render result records as the paper's Tables 1 (zero-shot classification), 2 (zero-shot retrieval), 3 (LLaVA-Bench,
with the judge named beside the scores), 4 (zero-shot IN-1K and ADE20K segmentation), 5 (COCO / LVIS detection) and 6
(the pretraining-objective ablation, from backbones utabench pretrained).

Each backbone gives a row of our numbers; a backbone whose config names its paper row (`paper: {method, model,
pairs}`) gets the published numbers and the difference beneath. The published tables are kept as data in
`utabench/results/paper_table*.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import pandas as pd

from utabench.core.errors import UtabenchError
from utabench.core.published import published_table
from utabench.harness.paper import match_row


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    csv: str
    # (column label, task, dataset types in order of preference, metric or a record field)
    columns: Tuple[Tuple[str, str, Tuple[str, ...], str], ...]
    average: bool
    # why a backbone's numbers cannot be set against its published row (None: they can)
    incomparable: Optional[Callable[[pd.DataFrame, Optional[pd.Series]], Optional[str]]] = None


def _first(group: pd.DataFrame, field: str):
    values = group[field].dropna() if field in group else []
    return values.iloc[0] if len(values) else None


def _llava_incomparable(group: pd.DataFrame, ref: Optional[pd.Series]) -> Optional[str]:
    """Table 3 compares only GPT-4-judged LLaVA-Bench runs of the paper's variant (COCO)."""
    reasons = []
    comparable = _first(group, "provenance.task_details.judge_comparable_to_paper")
    if comparable is not None and not bool(comparable):
        reasons.append(f"judged by {_first(group, 'provenance.task_details.judge')}, not GPT-4")
    variant = _first(group, "provenance.task_details.variant") or "in-the-wild"
    if ref is not None and variant != ref.get("variant"):
        reasons.append(f"ran LLaVA-Bench ({variant}) where the paper ran LLaVA-Bench ({ref.get('variant')})")
    return "; ".join(reasons) or None


_ZS = "zeroshot-classification"
TABLE1 = TableSpec(
    1, "Table 1: zero-shot classification, top-1 (%)", "paper_table1.csv",
    tuple((label, _ZS, (dataset,), "top1") for label, dataset in (
        ("IN-1K", "imagenet"), ("IN-A", "imagenet-a"), ("IN-R", "imagenet-r"), ("IN-V2", "imagenet-v2"),
        ("IN-S", "imagenet-sketch"), ("ObjectNet", "objectnet"))),
    True,
)
TABLE2 = TableSpec(
    2, "Table 2: zero-shot retrieval, recall (%)", "paper_table2.csv",
    tuple((f"{ds} {side} R@{k}", "retrieval", (ds.lower(),), f"{side}_r{k}") for side in ("text", "image")
          for ds in ("Flickr30k", "COCO") for k in (1, 5, 10)),
    False,
)
_LLAVA_SETS = ("llava-bench-coco", "llava-bench")
TABLE3 = TableSpec(
    3, "Table 3: LLaVA-Bench (frozen encoder), relative score (%)", "paper_table3.csv",
    tuple((label, "llava-bench", _LLAVA_SETS, metric) for label, metric in (
        ("Conversation", "conversation"), ("Detail", "detail"), ("Reasoning", "complex"), ("Overall", "overall"),
        ("Variant", "provenance.task_details.variant"), ("Judge", "provenance.task_details.judge"))),
    False, incomparable=_llava_incomparable,
)
TABLE4 = TableSpec(
    4, "Table 4: zero-shot ImageNet top-1 (%) and ADE20K segmentation mIoU (%, UperNet)", "paper_table4.csv",
    (("IN-1K ZS", _ZS, ("imagenet",), "top1"), ("ADE20K mIoU", "segmentation", ("ade20k",), "mIoU")),
    False,
)
TABLE5 = TableSpec(
    5, "Table 5: detection and instance segmentation, AP (%, Cascade Mask R-CNN)", "paper_table5.csv",
    (("COCO APbox", "detection", ("coco",), "box_ap"), ("COCO APmask", "detection", ("coco",), "mask_ap"),
     ("LVIS APbox", "detection", ("lvis",), "box_ap"), ("LVIS APmask", "detection", ("lvis",), "mask_ap")),
    False,
)
TABLES = {1: TABLE1, 2: TABLE2, 3: TABLE3, 4: TABLE4, 5: TABLE5}
TABLE6_TITLE = "Table 6: pretraining objectives (students distilled by utabench), zero-shot top-1 (%)"
_OBJECTIVE_LABEL = {"fd": "FD", "mim": "MIM", "uta+mim": "UTA+MIM", "uta": "UTA", "clip": "CLIP (teacher)"}
_ZS_SETS = [datasets[0] for _, _, datasets, _ in TABLE1.columns]


def paper_table(spec: TableSpec) -> pd.DataFrame:
    return published_table(spec.csv)


def shown_published(published: pd.DataFrame) -> pd.DataFrame:
    """The published table as the paper prints it (without utabench's row-key columns; "—" where it has none)."""
    def show(value):
        if isinstance(value, float):
            return "—" if pd.isna(value) else (f"{value:.0f}" if value >= 100 and value == int(value) else f"{value:.1f}")
        return value if value != "" else "—"
    return published[[c for c in published.columns if not c.startswith("key_")]].map(show)


def _paper_of(group: pd.DataFrame) -> Optional[dict]:
    """The backbone's `paper` entry, which pandas flattened into paper.method / paper.model / paper.pairs."""
    if "paper.method" not in group or "paper.model" not in group:
        return None
    known = group.dropna(subset=["paper.method", "paper.model"])
    if not len(known):
        return None
    first = known.iloc[0]
    return {f: first.get(f"paper.{f}") for f in ("method", "model", "pairs")
            if isinstance(first.get(f"paper.{f}"), str)}


def _fmt(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _value(group: pd.DataFrame, task: str, datasets: Tuple[str, ...], metric: str):
    for dataset_type in datasets:
        hit = group[(group.task == task) & (group.dataset_type == dataset_type)]
        if not hit.empty:
            if hit.iloc[0].status == "not_applicable":
                return "n/a"
            value = hit.iloc[0].get(metric if "." in metric else f"metrics.{metric}")
            return None if isinstance(value, float) and pd.isna(value) else value
    return None


def table_rows(records: pd.DataFrame, spec: TableSpec) -> List[dict]:
    """Long-form rows: one per (backbone, column) with ours, paper and delta (numbers, or 'n/a'); `paper_row` names
    the published row (or says that none or several match) and `note` why ours cannot be compared, if so."""
    if records.empty or "task" not in records:
        return []
    published = paper_table(spec)
    rows = []
    tasks = {task for _, task, _, _ in spec.columns}
    shown = set(records[records.task.isin(tasks - {_ZS} if len(tasks) > 1 else tasks)].backbone)
    for backbone, group in records[records.backbone.isin(shown)].groupby("backbone", sort=True):
        match = match_row(published, _paper_of(group), spec.number)
        ref = match.row if match else None
        values = {label: _value(group, task, datasets, metric) for label, task, datasets, metric in spec.columns}
        if spec.average:
            numbers = [v for v in values.values() if isinstance(v, float)]
            values["Average"] = sum(numbers) / len(numbers) if len(numbers) == len(spec.columns) else None
        note = spec.incomparable(group, ref) if spec.incomparable else None
        for label, ours in values.items():
            theirs = ref[label] if ref is not None and label in ref else None
            delta = ours - theirs if not note and isinstance(ours, float) and isinstance(theirs, float) else None
            rows.append({"table": spec.number, "backbone": backbone, "paper_row": match.label if match else "",
                         "column": label, "ours": ours, "paper": theirs, "delta": delta, "comparable": not note,
                         "note": note or ""})
    return rows


def render_markdown(records: pd.DataFrame, spec: TableSpec, with_paper: bool = True) -> str:
    rows = pd.DataFrame(table_rows(records, spec))
    out = [f"### {spec.title}", ""]
    notes = []
    if rows.empty:
        out.append("(no results for this table yet)")
    else:
        columns = list(dict.fromkeys(rows.column))
        lines = []
        for backbone, group in rows.groupby("backbone", sort=False):
            by = group.set_index("column")
            lines.append({"Backbone": backbone, **{c: _fmt(by.ours[c]) for c in columns}})
            if group.paper_row.iloc[0]:
                lines.append({"Backbone": f"↳ paper: {group.paper_row.iloc[0]}", **{c: _fmt(by.paper[c]) for c in columns}})
                if by.paper.notna().any():
                    delta = {c: _fmt(by.delta[c], True) for c in columns}
                    lines.append({"Backbone": "↳ Δ (ours − paper)", **delta})
            if group.note.iloc[0]:
                notes.append(f"- {backbone}: no Δ: {group.note.iloc[0]}.")
        out.append(pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True))
    if notes:
        out += [""] + notes
    if with_paper:
        published = shown_published(paper_table(spec))
        out += ["", f"Published ({spec.title.split(':')[0]} of the UTA paper):", "",
                published.to_markdown(index=False, disable_numparse=True)]
    return "\n".join(out) + "\n"


def table6_rows(records: pd.DataFrame) -> List[dict]:
    """One row per pretrained backbone: objective, counted FLOPs (student forward+backward per image, and relative
    to FD's), zero-shot top-1 on IN-1K and over the six sets, and IN-1K as a share of its teacher's."""
    if records.empty or "pretrain.objective" not in records:
        return []
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
        scores = [top1.get((backbone, d)) for d in _ZS_SETS]
        teacher = by_checkpoint.get(r.get("pretrain.teacher"))
        own, theirs = top1.get((backbone, "imagenet")), top1.get((teacher, "imagenet"))
        student_flops = r.get("pretrain.flops.student_per_image")
        rows.append({"table": 6, "backbone": backbone, "objective": _OBJECTIVE_LABEL.get(objective, objective),
                     "teacher": teacher or "",
                     "student GFLOPs/img": student_flops / 1e9 if pd.notna(student_flops) else None,
                     "FLOPs (× FD)": student_flops / fd if fd and pd.notna(student_flops) else None,
                     "ZS IN-1K": own,
                     "ZS avg": sum(scores) / len(scores) if all(s is not None for s in scores) else None,
                     "% of teacher": 100 * own / theirs if own is not None and theirs else None})
    order = list(_OBJECTIVE_LABEL.values())
    return sorted(rows, key=lambda row: (order.index(row["objective"]) if row["objective"] in order else 99,
                                         row["backbone"]))


def _show6(row: dict) -> dict:
    special = {"student GFLOPs/img": "{:.4f}", "FLOPs (× FD)": "{:.2f}×"}
    return {k: (special[k].format(v) if v is not None else "—") if k in special else _fmt(v)
            for k, v in row.items() if k != "table"}


def render_table6(records: pd.DataFrame, with_paper: bool) -> str:
    rows = table6_rows(records)
    out = [f"### {TABLE6_TITLE}", ""]
    if not rows:
        out.append("(no pretrained backbones in these results)")
    else:
        shown = [_show6(row) for row in rows]
        out.append(pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True))
    if with_paper:
        out += ["", "Published (Table 6 of the UTA paper; ViT-B, 90 epochs on ImageNet-21K; MIM has no zero-shot):",
                "", shown_published(published_table("paper_table6.csv")).to_markdown(index=False, disable_numparse=True)]
    return "\n".join(out) + "\n"


def render(records: pd.DataFrame, fmt: str = "markdown", tables=(1, 2, 3, 4, 5, 6), with_paper: bool = True) -> str:
    unknown = [t for t in tables if t not in TABLES and t != 6]
    if unknown:
        raise UtabenchError(f"unknown table {unknown[0]}; utabench renders tables 1 to 6")
    if fmt == "markdown":
        return "\n".join(render_markdown(records, TABLES[t], with_paper) if t != 6 else
                         render_table6(records, with_paper) for t in tables)
    if fmt == "csv":
        rows = [row for t in tables if t != 6 for row in table_rows(records, TABLES[t])]
        columns = ["table", "backbone", "paper_row", "column", "ours", "paper", "delta", "comparable", "note"]
        out = pd.DataFrame(rows, columns=columns).to_csv(index=False)
        table6 = table6_rows(records) if 6 in tables else []
        return out + ("\n" + pd.DataFrame(table6).to_csv(index=False) if table6 else "")
    raise UtabenchError(f"unknown table format {fmt!r}; choose markdown or csv")
