"""What a results table is, and the registry that tasks put their tables in (`harness/tables.py` renders them).

A standard table has one row per backbone and one column per (task, dataset type, metric), with the published row
of each backbone's `paper:` entry and the difference beneath. A table of another shape (the pretraining ablations)
gives its own `rows` from the records instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from utabench.core.registry import Registry

# (column label, task, dataset types in order of preference, metric name or a dotted record field)
Column = Tuple[str, str, Tuple[str, ...], str]


EMBEDDED_FILL = ("`utabench run-all` fills it on the embedded world; on real data, a run config with its tasks "
                 "(`utabench run-all --config my.yaml`)")
PAPER_FILL = ("`utabench run-all` fills it on the embedded world; `utabench run-all --config "
              "utabench/configs/paper.yaml` on the real sets with the released weights")


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    csv: str  # the published table in utabench/results/ ("": a table beyond the paper has none)
    columns: Tuple[Column, ...] = ()
    average: bool = False  # add the mean of the columns (Table 1)
    rows_from: Tuple[str, ...] = ()  # the tasks whose records give a backbone its row (default: any column's)
    incomparable: Optional[Callable] = None  # (records of a backbone, its published row) -> why no Δ, or None
    rows: Optional[Callable] = None  # records -> rows, for a table of its own shape
    formats: Dict[str, str] = field(default_factory=dict)  # column -> format, for `rows` tables
    published_note: str = ""  # what the published table needs said beside it
    footnote: str = ""  # the paper's note on its marks (†, ‡), printed under the table where a mark is shown
    fill: str = EMBEDDED_FILL  # what gives the table its rows, said where it has none yet


@dataclass(frozen=True)
class AblationColumn:
    """A downstream column of the pretraining-ablation tables (6-8) that a task's records feed: a task lists its own
    in `Task.ablation_columns`."""

    label: str
    dataset_type: str  # as the records give it (a detection config's `coco`)
    metric: str
    position: int  # left to right among the downstream columns


TABLES: Registry = Registry("table", "tables")


def register_table(spec: TableSpec) -> TableSpec:
    TABLES.register(str(spec.number), help=spec.title)(spec)
    return spec


def table_numbers() -> List[int]:
    return sorted(int(name) for name in TABLES.names())
