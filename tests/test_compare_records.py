"""scripts/compare_records.py: two results directories equal to the last digit, apart from times, machine and paths
under each side's own directories; any other difference is one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_records.py"


def _compare():
    spec = importlib.util.spec_from_file_location("compare_records", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare


def _write(root: Path, top1: float, seconds: float) -> None:
    path = root / "uta" / "zeroshot-classification" / "imagenet.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"status": "complete", "metrics": {"top1": top1}, "provenance": {
        "wall_seconds": seconds, "task_details": {"work_dir": str(root / "uta" / "x.work")}}}))


def test_equal_records_differ_only_in_times_and_roots(tmp_path):
    compare = _compare()
    _write(tmp_path / "a", 84.25, 1.0)
    _write(tmp_path / "b", 84.25, 2.5)
    assert compare(tmp_path / "a", tmp_path / "b") == []
    _write(tmp_path / "c", 84.26, 1.0)
    (line,) = compare(tmp_path / "a", tmp_path / "c")
    assert "metrics.top1: 84.25 != 84.26" in line
    (tmp_path / "c" / "uta" / "zeroshot-classification" / "imagenet.json").rename(tmp_path / "c" / "uta" / "y.json")
    assert compare(tmp_path / "a", tmp_path / "c") == ["uta/zeroshot-classification/imagenet.json: only in a"]
