"""The DataComp suite: its config reads a directory of wds sets through --data, names each missing set in one line
and runs the rest; the group metrics come from the sets' metadata; the table averages the main metrics as DataComp
does and says how many of the 38 tasks it had."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from utabench.core.configfile import bundled_config
from utabench.harness.cli import main
from utabench.harness.config import drop_missing, load_config
from utabench.tasks.datacomp import SUITE
from utabench.world.wds_export import GROUP_OF_CLASS, ensure_exports


def test_the_config_has_the_38_tasks_with_datacomps_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_CHECKPOINT", str(tmp_path / "open_clip_model.safetensors"))
    cfg = load_config(str(bundled_config("datacomp.yaml")), data=str(tmp_path))
    names = {e["name"] for entries in cfg.tasks.values() for e in entries}
    assert len(SUITE) == 38 and names == {t.dataset for t in SUITE}
    assert cfg.tasks["winogavil"][0]["type"] == "winogavil"
    options = {e["name"]: (e.get("group_by"), e.get("f1_macro")) for e in cfg.tasks["zeroshot-classification"]}
    assert options["fairness-dollar_street"] == options["fairness-geode"] == options["wilds-fmow"] == (0, None)
    assert options["wilds-iwildcam"] == (None, True)
    assert len(drop_missing(cfg)) == 38 and not cfg.tasks  # every set missing: each named, none left


def run_suite(data: Path, tmp_path: Path, *flags: str) -> Path:
    """`run-all` of the bundled DataComp config on the tiny CLIP with `--data DATA`; returns the results folder."""
    raw = yaml.safe_load(bundled_config("datacomp.yaml").read_text())
    raw["backbones"] = [{"name": "clip-tiny", "spec": "clip:utabench-clip-tiny"}]
    config = tmp_path / "datacomp.yaml"
    config.write_text(yaml.safe_dump(raw))
    results = tmp_path / "r"
    assert main(["run-all", "--config", str(config), "--data", str(data), "--results", str(results), "--cache-dir",
                 str(tmp_path / "cache"), "--threads", "2", "--no-progress", *flags]) == 0
    return results


def test_suite_on_two_sets_renders_its_partial_averages(world, tmp_path, monkeypatch, capsys):
    exports = ensure_exports(world)
    data = tmp_path / "data"
    shutil.copytree(exports / "imagenet1k", data / "wds_imagenet1k_test")
    shutil.copytree(exports / "imagenet1k", data / "wds_dollar_street_test")  # a stand-in with a group field
    results = run_suite(data, tmp_path)
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "skipped (optional)" in line]
    assert len(skipped) == 36 and any("wds_vtab-svhn_test not found" in line for line in skipped)
    assert main(["tables", "--results", str(results), "--table", "100"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| clip-tiny"))
    assert "2/38" in row and "(2/38)" in row and "(1/6)" not in row  # ImageNet alone is complete: no count
    record = json.loads(next(results.glob("clip-tiny/zeroshot-classification/fairness-dollar_street.json")).read_text())
    assert {"top1_worst_group", "top5_worst_group"} <= set(record["ci"]) and set(record["ci"]) == set(record["metrics"])
    assert GROUP_OF_CLASS == 4


def test_data_for_a_config_without_it_is_one_line(tmp_path, capsys):
    assert main(["run-all", "--data", str(tmp_path), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no ${DATA} for it to name" in err and not (tmp_path / "r").exists()
