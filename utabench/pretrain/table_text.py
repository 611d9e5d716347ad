"""Table 10 (utabench's number; the paper gives the figure in a sentence of section 4): text UTA, a text tower
trained from scratch to align its tokens with a CLIP text tower's. One row per backbone utabench pretrained with
objective `text-uta`: its IN-1K zero-shot top-1 (the teacher's image tower with the student's text tower) beside the
teacher's own (the same image tower with the teacher's text tower) and the share; a student whose config names its
row (`paper: {table: 10, row}`, `configs/pretrain/table10-text-uta.yaml`) with the published row and the difference
beneath.
"""

from __future__ import annotations

from typing import List

import pandas as pd

from utabench.core.tablespec import TableSpec, register_table
from utabench.pretrain.tables import _paper_and_delta, _paper_table, _pretrained, _scores, _teacher_of

COLUMNS = ("teacher ZS", "ZS", "% of teacher")


def text_rows(records: pd.DataFrame) -> List[dict]:
    pretrained = _pretrained(records)
    students = pretrained[pretrained["pretrain.objective"] == "text-uta"] if len(pretrained) else pretrained
    if not len(students):
        return []
    zs, teachers = _scores(records, "zeroshot-classification", "imagenet", "top1"), _teacher_of(records)
    out = []
    for _, r in students.sort_values("backbone").iterrows():
        teacher = teachers.get(r.backbone)
        own, theirs = zs.get(r.backbone), zs.get(teacher)
        ours = {"teacher ZS": theirs, "ZS": own,
                "% of teacher": 100 * own / theirs if own is not None and theirs else None}
        out.append({"table": 10, "backbone": r.backbone, "teacher": teacher or "", **ours})
        if _paper_table(r) == 10:
            row = str(r["pretrain.paper.row"])
            paper, delta = _paper_and_delta(10, row, ours, {c: c for c in COLUMNS})
            out += [{"table": 10, "backbone": f"↳ paper: {row}", "teacher": "", **paper},
                    {"table": 10, "backbone": "↳ Δ (ours − paper)", "teacher": "", **delta}]
    return out


register_table(TableSpec(
    10, "Table 10: text UTA, a text tower from scratch aligned to a CLIP text tower's tokens (paper section 4): "
    "IN-1K zero-shot top-1 with the teacher's image tower (%)",
    "paper_table10.csv", rows=text_rows, formats={"% of teacher": "{:.1f}"},
    published_note="; a sentence of section 4, numbered by utabench: a smaller text encoder, DataComp-1B for 1 epoch, "
    "EVA-01-CLIP's text encoder the teacher",
    fill="`utabench run-all --config utabench/configs/world-text-uta.yaml` fills it on the embedded world; "
    "utabench/configs/pretrain/table10-text-uta.yaml is the paper's setting (DataComp-1B, EVA-01-CLIP-g/14)",
))
