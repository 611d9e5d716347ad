"""The results store: one JSON record per (backbone, task, dataset), written atomically, read back by pandas.

Layout: RESULTS/<backbone>/<task>/<dataset>.json. A record whose status is `complete` or `not_applicable` is done;
`run-all` skips it unless forced. A crash can leave only whole records (or none): files are replaced atomically.
A job's `<record>.lock` tells another run on the same results that the job is being run (and by whom).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd

from utabench.core.io import atomic_write_json
from utabench.core.paths import path_component
from utabench.harness.record import Record, frame


def record_path(results: Path, backbone: str, task: str, dataset: str) -> Path:
    """Where a job's record goes; a name that cannot be a folder or file name is refused (`core/paths.py`)."""
    return (Path(results) / path_component(backbone, "backbone name") / path_component(task, "task name")
            / f"{path_component(dataset, 'dataset name')}.json")


def write_record(path: Path, record: Record) -> None:
    atomic_write_json(path, record.to_dict())


def read_record(path: Path) -> Optional[Record]:
    """The record of a file; None for a file that is missing, damaged or not a record."""
    try:
        raw = json.loads(Path(path).read_text())
        return Record.from_dict(raw) if isinstance(raw, dict) else None
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def is_done(path: Path, backbone: Optional[Dict[str, Any]] = None) -> bool:
    """A finished record of this record format, made by the same backbone spec (weights path and options) when one
    is given: a changed backbone under the same name is rerun."""
    record = read_record(path)
    return bool(record and record.done and (backbone is None or record.backbone_spec == backbone))


def cell_name(record: Path) -> str:
    """A record's name in a launched sweep: `<backbone>/<task>/<dataset>`, its path under the results directory."""
    record = Path(record)
    return f"{record.parent.parent.name}/{record.parent.name}/{record.stem}"


def record_files(results: Path) -> List[Path]:
    """The record files of a results directory (`<backbone>/<task>/<dataset>.json`; hidden folders are not)."""
    return [path for path in sorted(Path(results).glob("*/*/*.json")) if not path.parent.parent.name.startswith(".")]


def read_records(results: str | Path) -> List[Record]:
    """The readable records of a results directory."""
    return [record for record in map(read_record, record_files(Path(results))) if record is not None]


def load_results(results: str | Path) -> pd.DataFrame:
    """All records of a results directory as one flat DataFrame (metrics.top1, provenance.wall_seconds, ...)."""
    return frame(read_records(results))


class RecordLock:
    """`<record>.lock`: held by the process that runs the record's job, so a second run on the same results skips it.

    The file names its holder (pid, host, start); the lock itself is an exclusive `flock` on it, which the kernel
    drops when the holder dies, so a lock left by a killed run is taken over without any clean-up."""

    def __init__(self, record: Path):
        self.path = Path(record).with_suffix(".lock")
        self._fd: Optional[int] = None
        self._made: List[Path] = []  # the folders acquire created, deepest first

    def acquire(self) -> Optional[str]:
        """None when this process now holds the lock, else who holds it."""
        import fcntl

        while True:
            self._made = [folder for folder in self.path.parents if not folder.exists()]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # another run's release removed the empty folder in between
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return self.holder()
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # the previous holder removed it between our open and our lock
                same = False
            if same:
                break
            os.close(fd)
        holder = {"pid": os.getpid(), "host": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        os.fsync(fd)
        self._fd = fd
        return None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            info = {}
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('started', '?')}"

    def is_held(self) -> bool:
        """Whether a live process holds the lock, judged without taking it (a status query must never make a run
        skip its job): the file names a live pid of this host, or a process of another host (not visible here)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return False
        if not info or info.get("host") != platform.node():
            return bool(info)
        try:
            os.kill(int(info["pid"]), 0)
        except PermissionError:
            return True  # alive, another user's
        except (ProcessLookupError, KeyError, ValueError):
            return False
        return True

    def release(self) -> None:
        """Drop the lock, and the folders `acquire` made if they are left empty: a job that failed before its
        record was written leaves nothing behind."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
            for folder in self._made:
                try:
                    folder.rmdir()
                except OSError:  # not empty (records, work directories, another run's lock) or already gone
                    break
            self._made = []
