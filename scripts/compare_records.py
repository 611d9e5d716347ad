"""Compare the records of two results directories to the last digit: what a refactoring must leave unchanged.

    python scripts/compare_records.py BEFORE_RESULTS AFTER_RESULTS [--cache BEFORE_CACHE AFTER_CACHE]

Every record file of either directory must be in both, with equal status, metrics, weights hash, dataset
fingerprint and counts, task details and pretraining info. Paths are compared after replacing each side's results
(and cache) directory by a placeholder. Left out: what differs from run to run or machine to machine (times, host,
code version, library versions, device name) and the provenance of how a record was made (`run`, `evaluation`,
`training`, `pretrain.setup`), whose layout is what the change may add to. Prints one line per difference and exits 1
if there is any.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VOLATILE = {"wall_seconds", "train_seconds", "model_seconds", "images_per_second", "finished_at", "host",
            "code_version", "libraries", "device", "run", "evaluation", "training", "setup"}


def _leaves(value, prefix=""):
    if isinstance(value, dict):
        for key, inner in value.items():
            if key not in VOLATILE:
                yield from _leaves(inner, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, value


def _normalised(record: dict, roots: dict) -> dict:
    text = json.dumps(record)
    for root, name in roots.items():
        text = text.replace(str(root), name)
    return dict(_leaves(json.loads(text)))


def compare(before: Path, after: Path, caches=()) -> list:
    """The differences between two results directories, one line each."""
    files = {side: {p.relative_to(root) for p in root.glob("*/*/*.json")} for side, root in (("a", before),
                                                                                          ("b", after))}
    lines = [f"{path}: only in {side}" for side, other in (("a", "b"), ("b", "a"))
             for path in sorted(files[side] - files[other])]
    for path in sorted(files["a"] & files["b"]):
        sides = []
        for i, root in enumerate((before, after)):
            roots = {root.resolve(): "<results>", root: "<results>"}
            if caches:
                roots.update({Path(caches[i]).resolve(): "<cache>", Path(caches[i]): "<cache>"})
            sides.append(_normalised(json.loads((root / path).read_text()), roots))
        a, b = sides
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<missing>") != b.get(key, "<missing>"):
                lines.append(f"{path}: {key}: {a.get(key, '<missing>')!r} != {b.get(key, '<missing>')!r}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--cache", nargs=2, metavar=("BEFORE", "AFTER"), default=())
    args = parser.parse_args(argv)
    lines = compare(args.before, args.after, args.cache)
    for line in lines:
        print(line)
    count = len(list(args.before.glob("*/*/*.json")))
    print(f"{count} records: " + (f"{len(lines)} differences" if lines else "equal to the last digit"))
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
