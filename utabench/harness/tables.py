"""Render result records as the paper's Tables 1 (zero-shot classification) and 2 (zero-shot retrieval).

Each backbone gives a row of our numbers; a backbone whose config names its paper row (`paper: {method, model,
pairs}`) gets the published numbers and the difference beneath. The published tables are kept as data in
`utabench/results/paper_table*.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from io import StringIO
from typing import Callable, List, Optional, Tuple

import pandas as pd

from utabench.harness.errors import UtabenchError


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    task: str
    csv: str
    columns: Tuple[Tuple[str, str, str], ...]  # (column label, dataset type, metric)
    average: bool
    paper_model: Callable[[str], str]  # how a backbone's `paper.model` is spelled in this table


TABLE1 = TableSpec(
    1, "Table 1: zero-shot classification, top-1 (%)", "zeroshot-classification", "paper_table1.csv",
    (("IN-1K", "imagenet", "top1"), ("IN-A", "imagenet-a", "top1"), ("IN-R", "imagenet-r", "top1"),
     ("IN-V2", "imagenet-v2", "top1"), ("IN-S", "imagenet-sketch", "top1"), ("ObjectNet", "objectnet", "top1")),
    True, lambda model: model,
)
TABLE2 = TableSpec(
    2, "Table 2: zero-shot retrieval, recall (%)", "retrieval", "paper_table2.csv",
    tuple((f"{ds} {side} R@{k}", ds.lower(), f"{side}_r{k}") for side in ("text", "image")
          for ds in ("Flickr30k", "COCO") for k in (1, 5, 10)),
    False, lambda model: model.split("/")[0],
)
TABLES = {1: TABLE1, 2: TABLE2}


def paper_table(spec: TableSpec) -> pd.DataFrame:
    return pd.read_csv(StringIO(resources.files("utabench.results").joinpath(spec.csv).read_text()),
                       dtype={"pairs": str})


def _paper_of(group: pd.DataFrame) -> Optional[dict]:
    """The backbone's `paper` entry, which pandas flattened into paper.method / paper.model / paper.pairs."""
    fields = ("method", "model", "pairs")
    if not all(f"paper.{f}" in group for f in fields):
        return None
    known = group.dropna(subset=[f"paper.{f}" for f in fields])
    return {f: known.iloc[0][f"paper.{f}"] for f in fields} if len(known) else None


def _paper_row(spec: TableSpec, paper: Optional[dict], published: pd.DataFrame) -> Optional[pd.Series]:
    if not isinstance(paper, dict):
        return None
    model = spec.paper_model(str(paper.get("model", "")))
    hit = published[(published.method == paper.get("method")) & (published.model == model)
                    & (published.pairs == str(paper.get("pairs")))]
    return hit.iloc[0] if len(hit) else None


def _fmt(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def table_rows(records: pd.DataFrame, spec: TableSpec) -> List[dict]:
    """Long-form rows: one per (backbone, column) with ours, paper and delta (numbers, or 'n/a')."""
    if records.empty or "task" not in records:
        return []
    published = paper_table(spec)
    rows = []
    mine = records[records.task == spec.task]
    for backbone, group in mine.groupby("backbone", sort=True):
        ref = _paper_row(spec, _paper_of(group), published)
        values = {}
        for label, dataset_type, metric in spec.columns:
            hit = group[group.dataset_type == dataset_type]
            if hit.empty:
                values[label] = None
            elif hit.iloc[0].status == "not_applicable":
                values[label] = "n/a"
            else:
                values[label] = hit.iloc[0].get(f"metrics.{metric}")
        if spec.average:
            numbers = [v for v in values.values() if isinstance(v, float)]
            values["Average"] = sum(numbers) / len(numbers) if len(numbers) == len(spec.columns) else None
        for label, ours in values.items():
            theirs = float(ref[label]) if ref is not None else None
            delta = ours - theirs if isinstance(ours, float) and theirs is not None else None
            rows.append({"table": spec.number, "backbone": backbone,
                         "paper_row": " ".join(str(ref[k]) for k in ("method", "model", "pairs")) if ref is not None else "",
                         "column": label, "ours": ours, "paper": theirs, "delta": delta})
    return rows


def render_markdown(records: pd.DataFrame, spec: TableSpec, with_paper: bool = True) -> str:
    rows = pd.DataFrame(table_rows(records, spec))
    out = [f"### {spec.title}", ""]
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
                lines.append({"Backbone": "↳ Δ (ours − paper)", **{c: _fmt(by.delta[c], True) for c in columns}})
        out.append(pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True))
    if with_paper:
        published = paper_table(spec)
        out += ["", f"Published ({spec.title.split(':')[0]} of the UTA paper):", "",
                published.to_markdown(index=False, floatfmt=".1f")]
    return "\n".join(out) + "\n"


def render(records: pd.DataFrame, fmt: str = "markdown", tables=(1, 2), with_paper: bool = True) -> str:
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise UtabenchError(f"unknown table {unknown[0]}; utabench renders tables {', '.join(map(str, TABLES))}")
    if fmt == "markdown":
        return "\n".join(render_markdown(records, TABLES[t], with_paper) for t in tables)
    if fmt == "csv":
        rows = [row for t in tables for row in table_rows(records, TABLES[t])]
        columns = ["table", "backbone", "paper_row", "column", "ours", "paper", "delta"]
        return pd.DataFrame(rows, columns=columns).to_csv(index=False)
    raise UtabenchError(f"unknown table format {fmt!r}; choose markdown or csv")
