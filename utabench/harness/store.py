"""The results store: one JSON record per (backbone, task, dataset), written atomically, read back by pandas.

Layout: RESULTS/<backbone>/<task>/<dataset>.json. A record whose status is `complete` or `not_applicable` is done;
`run-all` skips it unless forced. A crash can leave only whole records (or none): files are replaced atomically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pandas as pd

from utabench.harness.io import atomic_write_json

SCHEMA_VERSION = 1
DONE = ("complete", "not_applicable")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("_") or "_"


def record_path(results: Path, backbone: str, task: str, dataset: str) -> Path:
    return Path(results) / _safe(backbone) / _safe(task) / f"{_safe(dataset)}.json"


def write_record(path: Path, record: Dict[str, Any]) -> None:
    atomic_write_json(path, {"schema": SCHEMA_VERSION, **record})


def read_record(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(path: Path, backbone: Optional[Dict[str, Any]] = None) -> bool:
    """A finished record, made by the same backbone spec (weights path and options) when one is given: a changed
    backbone under the same name is rerun."""
    record = read_record(path)
    if not record or record.get("status") not in DONE:
        return False
    return backbone is None or record.get("provenance", {}).get("backbone") == backbone


def iter_records(results: Path) -> Iterator[Dict[str, Any]]:
    for path in sorted(Path(results).glob("*/*/*.json")):
        record = read_record(path)
        if record is not None:
            yield record


def load_results(results: str | Path) -> pd.DataFrame:
    """All records of a results directory as one flat DataFrame (metrics.top1, provenance.wall_seconds, ...)."""
    return pd.json_normalize(list(iter_records(Path(results))))
