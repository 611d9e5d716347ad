"""Render result records as the tables that tasks register (`core/tablespec.py`): Tables 1 (zero-shot
classification), 2 (zero-shot retrieval), 3 (LLaVA-Bench), 4 (IN-1K zero-shot and fine-tuned, ADE20K), 5 (COCO /
LVIS detection) and 6-8 (the pretraining objectives and ablations, from backbones utabench pretrained:
`pretrain/tables.py`).

Each backbone gives a row of our numbers; a backbone whose config names its paper row (`paper: {method, model,
pairs}`) gets the published numbers and the difference beneath. The published tables are kept as data in
`utabench/results/paper_table*.csv`.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import pandas as pd

from utabench.core.errors import UtabenchError
from utabench.core.published import Marked, published_table
from utabench.core.tablespec import TABLES, TableSpec, table_numbers
from utabench.harness.paper import match_row


def paper_table(spec: TableSpec) -> pd.DataFrame:
    return published_table(spec.csv)


def shown_published(published: pd.DataFrame) -> pd.DataFrame:
    """The published table as the paper prints it (without utabench's row-key columns; "—" where it has none; a
    marked number with its mark)."""
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


def _shown(value, low, high) -> str:
    """Ours with its interval where the record has one: `77.5 [77.1, 77.9]` (percentile intervals are not
    symmetric, so both bounds)."""
    if isinstance(value, float) and isinstance(low, float) and isinstance(high, float) and not pd.isna(value):
        return f"{value:.1f} [{low:.1f}, {high:.1f}]"
    return _fmt(value)


INTERVAL_NOTE = ("[low, high] after a number: its record's 95% bootstrap interval (percentile, 1000 seeded resamples "
                 "of the images; `utabench tables --format csv` gives it as ci_low, ci_high; `utabench tables "
                 "--compare A B` pairs two backbones).")


def _interval(group: pd.DataFrame, task: str, datasets: Tuple[str, ...], metric: str) -> Tuple[Optional[float], ...]:
    """(low, high) of a metric's interval in the record `_value` reads, (None, None) where it has none."""
    column = f"ci.{metric}"
    for dataset_type in datasets:
        hit = group[(group.task == task) & (group.dataset_type == dataset_type)]
        if not hit.empty:
            interval = hit.iloc[0].get(column) if column in hit else None
            if isinstance(interval, (list, tuple)) and len(interval) == 2:
                return float(interval[0]), float(interval[1])
            return None, None
    return None, None


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
    tasks = set(spec.rows_from) or {task for _, task, _, _ in spec.columns}
    shown = set(records[records.task.isin(tasks)].backbone)
    for backbone, group in records[records.backbone.isin(shown)].groupby("backbone", sort=True):
        match = match_row(published, _paper_of(group), spec.number)
        ref = match.row if match else None
        values = {label: _value(group, task, datasets, metric) for label, task, datasets, metric in spec.columns}
        intervals = {label: _interval(group, task, datasets, metric) if "." not in metric else (None, None)
                     for label, task, datasets, metric in spec.columns}
        if spec.average:
            numbers = [v for v in values.values() if isinstance(v, float)]
            values["Average"] = sum(numbers) / len(numbers) if len(numbers) == len(spec.columns) else None
        note = spec.incomparable(group, ref) if spec.incomparable else None
        for label, ours in values.items():
            theirs = ref[label] if ref is not None and label in ref else None
            delta = ours - theirs if not note and isinstance(ours, float) and isinstance(theirs, float) else None
            low, high = intervals.get(label, (None, None)) if isinstance(ours, float) else (None, None)
            rows.append({"table": spec.number, "backbone": backbone, "paper_row": match.label if match else "",
                         "column": label, "ours": ours, "paper": theirs, "delta": delta, "comparable": not note,
                         "note": note or "", "ci_low": low, "ci_high": high})
    return rows


Block = Union[str, pd.DataFrame]  # a table is rendered as its blocks: paragraphs of text and frames


def standard_blocks(records: pd.DataFrame, spec: TableSpec, with_paper: bool = True) -> List[Block]:
    rows = pd.DataFrame(table_rows(records, spec), dtype=object)  # object: a paper number keeps its mark
    out: List[Block] = []
    notes = []
    if rows.empty:
        out.append(f"(no results for this table yet: {spec.fill})")
    else:
        columns = list(dict.fromkeys(rows.column))
        lines = []
        for backbone, group in rows.groupby("backbone", sort=False):
            by = group.set_index("column")
            shown = {c: _shown(by.ours[c], by.ci_low[c], by.ci_high[c]) for c in columns}
            lines.append({"Backbone": backbone, **shown})
            if group.paper_row.iloc[0]:
                lines.append({"Backbone": f"↳ paper: {group.paper_row.iloc[0]}", **{c: _fmt(by.paper[c]) for c in columns}})
                if by.paper.notna().any():
                    delta = {c: _fmt(by.delta[c], True) for c in columns}
                    lines.append({"Backbone": "↳ Δ (ours − paper)", **delta})
            if group.note.iloc[0]:
                notes.append(f"- {backbone}: no Δ: {group.note.iloc[0]}.")
        out.append(pd.DataFrame(lines))
    if not rows.empty and rows.ci_low.map(lambda v: isinstance(v, float)).any():
        notes.append(INTERVAL_NOTE)
    if notes:
        out.append("\n".join(notes))
    marked = not rows.empty and any(isinstance(value, Marked) for value in rows.paper)
    return out + _published_blocks(spec, with_paper, marked)


def _published_blocks(spec: TableSpec, with_paper: bool, marked: bool) -> List[Block]:
    """The published table (when asked for), then the paper's note on its marks if the table or ours shows one."""
    out: List[Block] = []
    if with_paper and spec.csv:  # a table beyond the paper has no published one
        out += [f"Published ({spec.title.split(':')[0]} of the UTA paper{spec.published_note}):",
                shown_published(paper_table(spec))]
    if spec.footnote and (with_paper or marked):
        out.append(spec.footnote)
    return out


def custom_rows(records: pd.DataFrame, spec: TableSpec) -> List[dict]:
    return spec.rows(records) if not records.empty else []


def custom_blocks(records: pd.DataFrame, spec: TableSpec, with_paper: bool = True) -> List[Block]:
    """A table of its own shape: the rows its `rows` function makes, formatted by its `formats`."""
    rows = custom_rows(records, spec)
    out: List[Block] = []
    if not rows:
        out.append(f"(no results for this table yet: {spec.fill})")
    else:
        def show(key, value):
            if key in spec.formats:
                return spec.formats[key].format(value) if value is not None else "—"
            return _fmt(value)
        out.append(pd.DataFrame([{k: show(k, v) for k, v in row.items() if k != "table"} for row in rows]))
    return out + _published_blocks(spec, with_paper, False)


def table_blocks(records: pd.DataFrame, spec: TableSpec, with_paper: bool = True) -> List[Block]:
    return (custom_blocks if spec.rows else standard_blocks)(records, spec, with_paper)


def _markdown(spec: TableSpec, blocks: List[Block]) -> str:
    parts = [f"### {spec.title}"] + [b if isinstance(b, str) else b.to_markdown(index=False, disable_numparse=True)
                                     for b in blocks]
    return "\n\n".join(parts) + "\n"


def render(records: pd.DataFrame, fmt: str = "markdown", tables: Optional[Sequence[int]] = None,
           with_paper: bool = True) -> str:
    """The tables (default: every registered one) as markdown, or as CSV (standard tables in one long frame,
    each other table after it)."""
    numbers = list(tables or table_numbers())
    specs = [TABLES.get(str(n)) for n in numbers]  # an unknown number is refused, listing the known ones
    if fmt == "markdown":
        return "\n".join(_markdown(spec, table_blocks(records, spec, with_paper)) for spec in specs)
    if fmt == "csv":
        rows = [row for spec in specs if not spec.rows for row in table_rows(records, spec)]
        columns = ["table", "backbone", "paper_row", "column", "ours", "paper", "delta", "comparable", "note", "ci_low",
                   "ci_high"]
        out = pd.DataFrame(rows, columns=columns).to_csv(index=False)
        for spec in specs:
            custom = custom_rows(records, spec) if spec.rows else []
            out += "\n" + pd.DataFrame(custom).to_csv(index=False) if custom else ""
        return out
    raise UtabenchError(f"unknown table format {fmt!r}; choose markdown or csv")
