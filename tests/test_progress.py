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


def test_bundled_times_are_scaled_to_the_machine(tmp_path, monkeypatch):
    """A stage this machine has not run takes its bundled time times how much slower this machine is: first by the
    probe against the bundled machine's probe (measured once per cache), then by the bundled stages it has run."""
    import utabench.core.progress as progress

    calls = []
    monkeypatch.setattr(progress, "probe", lambda: calls.append(1) or 1.0)
    here = Progress(tmp_path, lambda _: None)
    here.reference = {"job:a": 10.0, "pretrain:b": 150.0, "job:c": 20.0, "world": 200.0, progress.PROBE: 0.5}
    assert here.estimate("pretrain:b") == 300.0 and here.estimate("job:c") == 40.0 and here.estimate("x") is None
    assert calls == [1] and json.loads((tmp_path / "stage-times.json").read_text()) == {progress.PROBE: 1.0}
    here.record({"job:a": 12.0, "world": 100.0})  # 10 s of bundled training run, and the world: not enough yet
    assert here.estimate("job:c") == 40.0 and here.estimate("job:a") == 12.0
    here.record({"pretrain:b": 150.0})  # 160 s run in 162 s
    assert here.estimate("job:c") == 20.0 * 162.0 / 160.0
    again = Progress(tmp_path, lambda _: None)
    again.reference = dict(here.reference)
    assert again.estimate("job:c") == here.estimate("job:c") and calls == [1]  # kept in the cache: measured once
    worker = Progress(None, lambda _: None)  # a --parallel worker keeps no times and never probes
    worker.reference = dict(here.reference)
    assert worker.estimate("pretrain:b") == 150.0 and calls == [1]


def test_the_probe_is_a_short_positive_time():
    from utabench.core.progress import probe

    assert 0 < probe() < 30
