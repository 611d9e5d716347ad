"""A result record, typed: what one (backbone, task, dataset) job produced and how. The runner makes it, the store
writes and reads it (`store.read_record`, `store.read_records`: the one reader), and status, report, tables and
claims work from it; the tables' DataFrame is its flat view (`frame`: `metrics.top1`, `provenance.wall_seconds`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

import pandas as pd

SCHEMA_VERSION = 1  # of the record format; a record of another version is run again
DONE = ("complete", "not_applicable")


@dataclass(frozen=True)
class Record:
    status: str  # complete, not_applicable
    backbone: str
    task: str
    dataset: str
    dataset_type: str
    metrics: Dict[str, float] = field(default_factory=dict)
    # {metric: [low, high]}: each metric's 95% bootstrap interval, from the per-sample outcomes the record's
    # provenance.samples names (utabench/tasks/bootstrap.py); ci_method says how it was drawn. Empty: none kept.
    ci: Dict[str, List[float]] = field(default_factory=dict)
    ci_method: Optional[Dict[str, Any]] = None
    paper: Optional[Dict[str, Any]] = None  # the published row it is compared with
    pretrain: Optional[Dict[str, Any]] = None  # how utabench pretrained the backbone
    provenance: Dict[str, Any] = field(default_factory=dict)  # backbone, dataset, evaluation / training setups, ...
    reason: str = ""  # why not applicable
    schema: int = SCHEMA_VERSION

    @property
    def done(self) -> bool:
        """Finished, in this record format: a run skips it unless forced."""
        return self.status in DONE and self.schema == SCHEMA_VERSION

    @property
    def backbone_spec(self) -> Optional[Dict[str, Any]]:
        """The backbone spec (family, model, weights, options) that made it."""
        return self.provenance.get("backbone")

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "Record":
        """A record from its JSON; None-valued or missing optional fields take their defaults, unknown keys are
        dropped (a later format's additions)."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in names and value is not None})

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        if not self.reason:
            del out["reason"]
        for key in ("ci", "ci_method"):  # a record without intervals reads as it did before they existed
            if not out[key]:
                del out[key]
        return {"schema": out.pop("schema"), **out}


def frame(records: List[Record]) -> pd.DataFrame:
    """Records as one flat DataFrame, a column per leaf (`metrics.top1`, `provenance.dataset.num_images`)."""
    return pd.json_normalize([record.to_dict() for record in records])
