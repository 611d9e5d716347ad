"""The embedded world is deterministic, and `run-all` on the embedded default runs every task end to end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from utabench.world import ensure_world, generate_world


def _digest(root):
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_world_is_seeded(tmp_path):
    counts = {"val": 1, "v2": 1, "sketch": 1, "a": 1, "r": 1, "objectnet": 1, "flickr30k": 3, "coco": 3}
    a = _digest(generate_world(tmp_path / "a", seed=1, counts=counts))
    b = _digest(generate_world(tmp_path / "b", seed=1, counts=counts))
    c = _digest(generate_world(tmp_path / "c", seed=2, counts=counts))
    assert a == b != c


def test_ensure_world_generates_once(tmp_path):
    cfg = {"seed": 0, "counts": {"val": 1, "v2": 1, "sketch": 1, "a": 1, "r": 1, "objectnet": 1, "flickr30k": 2,
                                 "coco": 2}}
    root = ensure_world(tmp_path, cfg)
    stamp = (root / "classes.json").stat().st_mtime_ns
    assert ensure_world(tmp_path, cfg) == root and (root / "classes.json").stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "world").iterdir() if p.name.endswith(".tmp")]


def test_captions_describe_the_scene(world):
    entry = json.loads((world / "coco" / "dataset_coco.json").read_text())["images"][0]
    assert len(entry["sentences"]) == 5 and entry["filepath"] == "val2014"
    assert any(shape in entry["sentences"][0]["raw"] for shape in ("circle", "square", "star", "heart", "ring",
                                                                   "triangle", "cross", "diamond", "hexagon", "arrow"))


@pytest.mark.slow
def test_run_all_embedded_default_end_to_end(tmp_path):
    env = {**os.environ, "UTABENCH_CACHE": str(tmp_path / "cache")}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "utabench.harness.cli", "run-all", "--results", str(tmp_path / "r")],
                         env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "r").rglob("*.json")]
    assert len(records) == 4 * 8  # 4 backbones x (6 classification + 2 retrieval sets)
    assert {r["status"] for r in records if r["backbone"] != "eva02-mim-tiny"} == {"complete"}
    assert {r["status"] for r in records if r["backbone"] == "eva02-mim-tiny"} == {"not_applicable"}
    assert "### Table 1" in run.stdout and "### Table 2" in run.stdout and "uta-tiny" in run.stdout
    assert seconds < 300
    tables = subprocess.run([sys.executable, "-m", "utabench.harness.cli", "tables", "--results", str(tmp_path / "r"),
                             "--format", "csv"], capture_output=True, text=True, timeout=120)
    assert tables.returncode == 0 and tables.stdout.startswith("table,backbone")
