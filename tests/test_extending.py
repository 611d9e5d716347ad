"""Extending utabench from outside it: a plugin module (tests/plugins/toy_task.py) adds a task, a dataset type and a
table; `utabench run` gets the task's own flags from its schemas, runs it end to end, and `utabench tables` renders
the table, with no change to utabench's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).parent / "plugins"


def _cli(*args, tmp_path):
    env = {**os.environ, "UTABENCH_PLUGINS": "toy_task", "PYTHONPATH": str(PLUGINS),
           "UTABENCH_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "utabench.harness.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_plugin_task_runs_through_the_cli(tmp_path, world):
    helped = _cli("run", "embedding-norm", "--help", tmp_path=tmp_path)
    assert helped.returncode == 0 and "--limit LIMIT" in helped.stdout and "--normalise" in helped.stdout
    assert "--recipe" not in helped.stdout  # only this task's options
    folder = world / "imagenet" / "val" / sorted(os.listdir(world / "imagenet" / "val"))[0]
    results = tmp_path / "r"
    run = _cli("run", "embedding-norm", "--backbone", "clip:utabench-clip-tiny", "--dataset", f"flat-folder:{folder}",
               "--limit", "3", "--normalise", "true", "--results", str(results), "--threads", "2", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(next(results.glob("*/embedding-norm/flat-folder.json")).read_text())
    assert record["metrics"]["mean_norm"] == 1.0 or abs(record["metrics"]["mean_norm"] - 1.0) < 1e-5
    assert record["provenance"]["dataset"]["num_images"] == 3 and record["provenance"]["dataset"]["fingerprint"]
    bad = _cli("run", "embedding-norm", "--backbone", "clip:utabench-clip-tiny", "--dataset", f"flat-folder:{folder}",
               "--limit", "0", "--results", str(results), tmp_path=tmp_path)
    assert bad.returncode == 2 and "limit: Input should be greater than 0" in bad.stderr
    tables = _cli("tables", "--results", str(results), "--table", "90", "--no-paper", tmp_path=tmp_path)
    assert tables.returncode == 0 and "### Table 90" in tables.stdout and "1.0" in tables.stdout
