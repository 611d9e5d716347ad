"""Table 11: the comparison with the teacher (seed 001_f38f52fa9a0509bb.txt, appendix A.4), from the records of the
backbones whose pretraining config names one of its rows (`paper: {table: 11, row}`): the CLIP teacher itself
contrastively fine-tuned (`CLIP-L FT`), the same on the kept tokens of a reversed block-wise mask at 0.5 (`CLIP-L FT +
Block-R 0.5`), and the UTA student distilled from that teacher and then fine-tuned (`UTA-L`).

Each arm's sample budget is counted from the records: its own steps times its global batch (FT), plus, for a
fine-tuned student, its student's distillation (PT, from the student's own record: `utabench run-all` evaluates it
when the run config names it); the teacher's own pretraining is in no arm's budget, as in the paper. `UTA − this` is
the UTA arm's zero-shot top-1 minus the arm's (on any scale, the world's or ImageNet's, the figure the paper's claim
is about). Each arm is followed by the published row and the difference.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pandas as pd

from utabench.core.published import published_table
from utabench.core.tablespec import TableSpec, register_table
from utabench.pretrain.objectives import OBJECTIVES
from utabench.pretrain.tables import _paper_table, _pretrained, _scores

TABLE = 11
UTA_ROW = "UTA-L"
SAMPLES = ("PT samples", "FT samples", "samples")  # ours; the published table's in billions, "PT samples (B)", ...


def _samples(row: pd.Series) -> Optional[float]:
    """A training run's samples: its steps times its global batch (as the trainer recorded them)."""
    steps, batch = row.get("pretrain.steps"), row.get("pretrain.setup.batch_size")
    if steps is None or batch is None or pd.isna(steps) or pd.isna(batch):
        return None
    return float(steps) * float(batch)


def count(samples: Optional[float]) -> Optional[str]:
    """A sample count as the table prints it: billions as the paper does (2.0B), a small run's exactly (95,232)."""
    if samples is None:
        return None
    return f"{samples / 1e9:.1f}B" if samples >= 1e8 else f"{samples:,.0f}"


def arms(records: pd.DataFrame) -> List[Dict[str, Any]]:
    """The Table 11 arms in the records, in the published row order: {row, backbone, init, PT / FT samples, samples,
    ZS}. PT is the distillation of the student a fine-tuned UTA arm started from (None for a fine-tuned CLIP); the
    total is None where a part is unknown (a UTA arm whose student has no record)."""
    pretrained = _pretrained(records)
    if pretrained.empty:
        return []
    by_checkpoint = {r["provenance.backbone.checkpoint"]: r for _, r in pretrained.iterrows()
                     if isinstance(r.get("provenance.backbone.checkpoint"), str)}
    zs = _scores(records, "zeroshot-classification", "imagenet", "top1")
    order = list(published_table(f"paper_table{TABLE}.csv")["config"])
    out = []
    for _, r in pretrained.iterrows():
        if _paper_table(r) != TABLE:
            continue
        row, init = str(r["pretrain.paper.row"]), by_checkpoint.get(r.get("pretrain.init"))
        student = init is not None and OBJECTIVES.get(init["pretrain.objective"]).recipe == "distill"
        own, before = _samples(r), _samples(init) if student else None
        known = own is not None and (before is not None if row == UTA_ROW else True)
        out.append({"row": row, "backbone": r.backbone, "init": init.backbone if init is not None else "",
                    "PT samples": before, "FT samples": own, "samples": own + (before or 0.0) if known else None,
                    "ZS": zs.get(r.backbone)})
    return sorted(out, key=lambda arm: (order.index(arm["row"]), arm["backbone"]))


def _gap(uta: Optional[float], this: Optional[float]) -> Optional[float]:
    return uta - this if uta is not None and this is not None else None


def _signed(value: Optional[float]) -> Optional[str]:
    return f"{value:+.1f}" if value is not None else None


def teacher_rows(records: pd.DataFrame) -> List[dict]:
    """Each arm, then the published row (its samples, zero-shot top-1 and gap to UTA-L) and ours − paper in the two
    scores (sample counts are shown, not differenced: the world's are not the paper's)."""
    found = arms(records)
    uta = next((arm["ZS"] for arm in found if arm["row"] == UTA_ROW), None)
    published = published_table(f"paper_table{TABLE}.csv").set_index("config")
    out = []
    for arm in found:
        theirs = published.loc[arm["row"]]
        scores = {"ZS": (arm["ZS"], float(theirs["ZS"])),
                  "UTA − this": (_gap(uta, arm["ZS"]), float(published.loc[UTA_ROW, "ZS"]) - float(theirs["ZS"]))}
        ours = {**{c: count(arm[c]) for c in SAMPLES}, "ZS": arm["ZS"], "UTA − this": _signed(scores["UTA − this"][0])}
        paper = {**{c: count(theirs[f"{c} (B)"] * 1e9) if pd.notna(theirs[f"{c} (B)"]) else None for c in SAMPLES},
                 "ZS": scores["ZS"][1], "UTA − this": _signed(scores["UTA − this"][1])}
        delta = {**{c: None for c in SAMPLES},
                 **{c: _signed(_gap(mine, published_value)) for c, (mine, published_value) in scores.items()}}
        out += [{"table": TABLE, "row": arm["row"], "backbone": arm["backbone"], "from": arm["init"], **ours},
                {"table": TABLE, "row": "↳ paper", "backbone": "", "from": "", **paper},
                {"table": TABLE, "row": "↳ Δ (ours − paper)", "backbone": "", "from": "", **delta}]
    return out


register_table(TableSpec(
    TABLE, "Table 11: the comparison with the teacher (paper A.4): the CLIP teacher fine-tuned for UTA's sample "
    "budget, with and without masking, against UTA; ImageNet zero-shot top-1 (%)", f"paper_table{TABLE}.csv",
    rows=teacher_rows,
    published_note=" (appendix A.4); OpenAI CLIP-L/14 as the teacher; UTA-L's samples are its 90 ImageNet-21K epochs "
    "(1.2B) plus 0.8B of contrastive fine-tuning",
    fill="name the arms of utabench/configs/pretrain/table11-*.yaml as backbones of a run config, with the student "
         "the UTA arm fine-tunes (table11-uta-l14-pretrain.yaml), then `utabench run-all --config THAT.yaml` (the "
         "paper's setting: OpenAI CLIP-L/14, ImageNet-21K, DataComp-1B); on the embedded world, `utabench run-all "
         "--config utabench/configs/world-teacher-comparison.yaml`",
))
