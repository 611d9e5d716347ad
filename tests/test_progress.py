"""Stage lines: each job's line gives the time it took last time (none the first time) and what the run has left;
run-all ends with one summary line (what ran, what was skipped, the time, where the report is)."""

from __future__ import annotations

import json
import re

import yaml

from utabench.core.progress import Progress
from utabench.harness.cli import main


def test_estimates_come_from_the_last_run_and_a_damaged_file_only_costs_them(tmp_path):
    lines = []
    first = Progress(tmp_path, lines.append)
    start = first.start("a", "stage a", after=["b"])
    first.done("a", start - 65)  # as if it had taken 65 s
    second = Progress(tmp_path, lines.append)
    second.start("a", "stage a", after=["b"])
    second.times["b"] = 30
    second.start("a", "stage a", after=["b"])
    assert lines == ["… stage a (est. ?)", "… stage a (est. 1m05s)", "… stage a (est. 1m05s; about 1m35s left)"]
    (tmp_path / "stage-times.json").write_text("{not json")
    assert Progress(tmp_path, lines.append).estimate("a") is None


def test_run_all_prints_stage_lines_and_a_summary(world, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "settings": {"device": "cpu", "batch_size": 8},
        "backbones": ["uta:tiny", "clip:utabench-clip-tiny"],
        "tasks": {"zeroshot-classification": [{"name": "imagenet", "type": "imagenet", "root": str(world / "imagenet"),
                                               "classes": str(world / "classes.json")}]}}))
    common = ["run-all", "--config", str(config), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(common + ["--results", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "… [1/2] uta:tiny · zeroshot-classification · imagenet (est. ?)" in out
    summary = out.strip().splitlines()[-1]
    assert re.match(r"run-all done in \d+s: 2 complete \(of 2 jobs\); records in .*; report: .*report\.html$", summary)
    assert set(json.loads((tmp_path / "cache" / "stage-times.json").read_text())) == {
        "job:uta_tiny/zeroshot-classification/imagenet",
        "job:clip_utabench-clip-tiny/zeroshot-classification/imagenet"}
    assert main(common + ["--results", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"… \[1/2\] uta:tiny · zeroshot-classification · imagenet \(est\. \d+s; about \d+s left\)", out)
    assert main(common + ["--results", str(tmp_path / "b")]) == 0  # everything done: skipped
    assert re.match(r"run-all done in \d+s: 2 skipped \(of 2 jobs\)", capsys.readouterr().out.strip().splitlines()[-1])
