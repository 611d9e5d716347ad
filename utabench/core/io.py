"""File IO. The one way utabench writes a file: atomically, durably and readable by the group.

`atomic_write(path, write)` lets `write` fill a temporary file beside `path`, flushes it to disk, gives it the
permissions a plain `open()` would (0666 less the umask: results directories are shared, and `mkstemp` alone would
leave 0600), and renames it over `path`. A crash leaves the old file or the new one, never half of one, and no
temporary file behind. Also: reading jsonl files with errors that name the line, and checking up front that a
directory can be written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List

from utabench.core.errors import UtabenchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Create or replace `path` with what `write(tmp)` puts into the temporary file `tmp`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def check_writable_dir(folder: str | Path, what: str, hint: str) -> None:
    """Refuse, before any work, a directory that cannot be created or written (nothing is left behind)."""
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UtabenchError(f"{what} {folder} cannot be created: {probe} is not a directory; {hint}")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as exc:
        raise UtabenchError(f"{what} {folder} is not writable ({exc.strerror} in {probe}); {hint}") from None


def read_jsonl(path: str | Path, what: str) -> List[Dict[str, Any]]:
    """The JSON objects of a jsonl file, one per non-empty line; a bad line is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UtabenchError(f"{what} {path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UtabenchError(f"{path}:{number}: not a JSON object ({exc.msg}); {what} holds one JSON "
                                    "object per line") from None
            if not isinstance(row, dict):
                raise UtabenchError(f"{path}:{number}: a {type(row).__name__}, expected a JSON object ({what})")
            rows.append(row)
    return rows
