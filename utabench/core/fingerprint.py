"""File fingerprints, the one place they are made: content hashes (checkpoints, dataset files), cached content
hashes for datasets, cheap stat fingerprints for multi-GB inputs that only decide whether to redo a step, and
`json_digest` for the descriptions (configs, cache keys) that name what a cached result depends on.

Dataset fingerprints come from file contents: an image changed in place changes the fingerprint.

A fingerprint is sha256 over what a dataset reader declares its results depend on: the relative path and the sha256
of every file it evaluates on (images, annotation files) plus `extra` bytes (class names, templates, split). File
hashes are cached in `<cache>/file-hashes.sqlite` under (absolute path, size, modification time), so a set is read
once; later runs only `stat` its files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple

from utabench.core.errors import UtabenchError

_CHUNK = 1 << 20
UNREADABLE = "unreadable"  # the digest of a file that cannot be read, where such files are skipped


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        if hasattr(hashlib, "file_digest"):  # Python 3.11+
            return hashlib.file_digest(handle, "sha256").hexdigest()
        digest = hashlib.sha256()
        while block := handle.read(_CHUNK):
            digest.update(block)
        return digest.hexdigest()


class FileHashes:
    """Content hashes of files, remembered by (path, size, mtime) in a SQLite table shared by every run."""

    def __init__(self, cache_dir: Path):
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(cache_dir / "file-hashes.sqlite", timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                        "sha256 TEXT)")

    def digests(self, files: Iterable[Path], skip_unreadable: bool = False) -> Dict[str, str]:
        """{absolute path: sha256} of the files. A file that cannot be read (a broken symlink, no permission) is an
        error naming it, or with `skip_unreadable` has the digest UNREADABLE (its reader counts it as skipped)."""
        names = [os.path.abspath(f) for f in files]
        known: Dict[str, Tuple[int, int, str]] = {}
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            rows = self.db.execute(f"SELECT path, size, mtime_ns, sha256 FROM hashes WHERE path IN "
                                   f"({','.join('?' * len(chunk))})", chunk)
            known.update({path: (size, mtime, digest) for path, size, mtime, digest in rows})
        out, fresh = {}, []
        for name in names:
            try:
                stat = os.stat(name)
                cached = known.get(name)
                if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
                    out[name] = cached[2]
                else:
                    out[name] = file_sha256(Path(name))
                    fresh.append((name, stat.st_size, stat.st_mtime_ns, out[name]))
            except OSError as exc:
                if not skip_unreadable:
                    why = "a broken symlink" if os.path.islink(name) and not os.path.exists(name) else exc.strerror
                    raise UtabenchError(f"{name} cannot be read ({why}); fix or remove it, or pass --skip-corrupt "
                                        "to skip such images (they are counted in the result record)") from None
                out[name] = UNREADABLE
        if fresh:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", fresh)
        return out

    def close(self) -> None:
        self.db.close()


def fingerprint(root: Path, files: Iterable[Path], extra: bytes, cache_dir: Path, skip_unreadable: bool = False
                ) -> str:
    """sha256 over `extra` and, in order, each file's path relative to `root` (absolute if outside) and contents
    (`skip_unreadable`: see `FileHashes.digests`)."""
    files = list(files)
    hashes = FileHashes(cache_dir)
    try:
        digests = hashes.digests(files, skip_unreadable)
    finally:
        hashes.close()
    digest = hashlib.sha256(extra)
    prefix = os.path.abspath(root) + os.sep
    for path in files:
        name = os.path.abspath(path)
        digest.update(name.removeprefix(prefix).encode() + b"\0" + digests[name].encode())
    return digest.hexdigest()


def stat_fingerprint(*paths: Path) -> str:
    """Of the files' paths, sizes and modification times: cheap for multi-GB LLM weights, and any rewrite shows."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode())
        if Path(path).is_file():
            stat = Path(path).stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def json_digest(what: Any) -> str:
    """16 hex digits of sha256 over `what` as sorted-key JSON (values JSON cannot hold written as their str)."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
