"""Table 9: the positional-embedding ablation (seed 000_f54b7afebfe62c48.txt, Table 7), from the records of students
utabench pretrained without a positional embedding (`student: {pos_embed: {absolute: false}}`, see PosEmbedConfig in
pretrain/config.py).

Each such student (✗) is shown beside its twin (✓): the first by name of the students of the same objective and
teacher pretrained with every positional embedding, outside the ablations. Then the gap (✗ − ✓), the paper's claim:
MIM loses more without the embedding than UTA (COCO AP box −3.8 against −1.9). A ✗ student whose config names its
Table 9 row (`configs/pretrain/table9-*.yaml`) also gets the published ✗ and ✓ rows, the published gap and Δ.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pandas as pd

from utabench.core.published import published_table
from utabench.core.tablespec import TableSpec, register_table
from utabench.pretrain.tables import (
    ABLATION_TABLES,
    _downstream,
    _paper_and_delta,
    _paper_table,
    _pos_embed_set,
    _pretrained,
    _scores,
    label,
)

COLUMNS = ("ZS", "FT", "COCO APbox", "COCO APmask", "ADE20K mIoU")


def pos_embed_ablation(row: pd.Series) -> Optional[str]:
    """How a pretrained backbone's record says it was pretrained without a positional embedding ("✗", or "✗ (no
    RoPE)" without RoPE too), None when it had every one."""
    if not _pos_embed_set(row):
        return None
    rope = row.get("pretrain.pos_embed.rope")
    return "✗" if rope is None or pd.isna(rope) or bool(rope) else "✗ (no RoPE)"


def _values(records: pd.DataFrame, backbone: str) -> Dict[str, Any]:
    zs = _scores(records, "zeroshot-classification", "imagenet", "top1").get(backbone)
    return {c: v for c, v in {"ZS": zs, **_downstream(records, backbone)}.items() if c in COLUMNS}


def _gap(ablated: Dict[str, Any], full: Dict[str, Any]) -> Dict[str, Optional[float]]:
    return {c: ablated[c] - full[c] if ablated.get(c) is not None and full.get(c) is not None else None
            for c in COLUMNS}


def ablation_pairs(records: pd.DataFrame) -> List[tuple]:
    """(ablated backbone, its twin or None, objective, its record row) for each student pretrained without a
    positional embedding, MIM first (the paper's order)."""
    pretrained = _pretrained(records)
    if pretrained.empty:
        return []
    rows = list(pretrained.iterrows())
    full = [(r.backbone, r["pretrain.objective"], r.get("pretrain.teacher")) for _, r in rows
            if pos_embed_ablation(r) is None and _paper_table(r) not in ABLATION_TABLES]
    pairs = []
    for _, r in rows:
        if pos_embed_ablation(r) is None:
            continue
        twins = sorted(b for b, objective, teacher in full
                       if objective == r["pretrain.objective"] and teacher == r.get("pretrain.teacher"))
        pairs.append((r.backbone, twins[0] if twins else None, r["pretrain.objective"], r))
    return sorted(pairs, key=lambda p: (p[2] != "mim", p[2], p[0]))


def pe_rows(records: pd.DataFrame) -> List[dict]:
    out: List[dict] = []
    published = published_table("paper_table9.csv").set_index("config")
    for ablated, twin, objective, r in ablation_pairs(records):
        name, mark = label(objective), pos_embed_ablation(r)
        ours = _values(records, ablated)
        row = str(r["pretrain.paper.row"]) if _paper_table(r) == 9 else None
        blank = {"table": 9, "method": "", "PE": "", "backbone": ""}
        out.append({**blank, "method": name, "PE": mark, "backbone": ablated, **ours})
        if row is not None:
            paper, delta = _paper_and_delta(9, row, ours, {c: c for c in COLUMNS})
            out += [{**blank, "PE": "↳ paper", "backbone": row, **paper},
                    {**blank, "PE": "↳ Δ (ours − paper)", **delta}]
        if twin is None:
            out.append({**blank, "PE": "✓", "backbone": f"(no {name} student with every positional embedding and "
                                                          "the same teacher)"})
            continue
        theirs = _values(records, twin)
        out.append({**blank, "method": name, "PE": "✓", "backbone": twin, **theirs})
        full_row = f"{name} ✓"
        if row is not None and full_row in published.index:
            paper_full, delta = _paper_and_delta(9, full_row, theirs, {c: c for c in COLUMNS})
            out += [{**blank, "PE": "↳ paper", "backbone": full_row, **paper_full},
                    {**blank, "PE": "↳ Δ (ours − paper)", **delta}]
        out.append({**blank, "method": name, "PE": "gap (✗ − ✓)", **_gap(ours, theirs)})
        if row is not None and full_row in published.index:
            out.append({**blank, "PE": "↳ paper gap", **_gap(paper, paper_full)})
    return out


register_table(TableSpec(
    9, "Table 9: positional embedding in pretraining (students without it, ✗, beside their twins, ✓), top-1 / AP / "
    "mIoU (%)", "paper_table9.csv", rows=pe_rows,
    published_note=" (seed 000's Table 7); ViT-B, 90 epochs on ImageNet-21K; ✗: without positional embedding in "
    "pretraining, added back at zero for fine-tuning",
    fill="name a student of utabench/configs/pretrain/table9-*.yaml (the paper's setting) or the world's "
         "world-student-no-pe.yaml / world-student-mim-no-pe.yaml as a backbone beside its twin, e.g. `utabench "
         "run-all --config utabench/configs/world-pe-ablation.yaml`",
))
