"""run-all / run through the CLI: records with provenance, skip-if-done, --force, interruption, bad input, tables."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from utabench.harness.cli import main
from utabench.harness.record import Record
from utabench.harness.store import load_results, read_record, record_path, write_record
from utabench.harness.tables import render


def _config(tmp_path, world, datasets=None, backbones=None):
    cfg = {
        "settings": {"device": "cpu", "batch_size": 8},
        "backbones": backbones or [{"name": "clip-tiny", "spec": "clip:utabench-clip-tiny"}],
        "tasks": datasets or {
            "zeroshot-classification": [
                {"name": "imagenet-1k", "type": "imagenet", "root": str(world / "imagenet"),
                 "classes": str(world / "classes.json")},
                {"name": "objectnet", "type": "objectnet", "root": str(world / "objectnet")}],
            "retrieval": [{"name": "flickr30k", "type": "flickr30k", "root": str(world / "flickr30k")}],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_all(config, results, cache, *extra):
    return main(["run-all", "--config", str(config), "--results", str(results), "--cache-dir", str(cache), *extra])


def test_run_all_records_provenance_and_skips_done(tmp_path, world, capsys):
    config, results, cache = _config(tmp_path, world), tmp_path / "results", tmp_path / "cache"
    assert _run_all(config, results, cache) == 0
    frame = load_results(results)
    assert sorted(frame.dataset) == ["flickr30k", "imagenet-1k", "objectnet"]
    assert set(frame.status) == {"complete"}
    row = frame[frame.dataset == "imagenet-1k"].iloc[0]
    assert 0 <= row["metrics.top1"] <= 100 and row["provenance.dataset.num_images"] == 40
    for key in ("provenance.dataset.fingerprint", "provenance.code_version", "provenance.libraries.torch",
                "provenance.device", "provenance.wall_seconds", "provenance.images_per_second",
                "provenance.backbone_info.params", "provenance.backbone.model"):
        assert key in frame.columns and row[key] not in (None, "")
    assert row["provenance.random_init_seed"] == 0 and row["provenance.train_seconds"] == 0
    assert row["provenance.model_seconds"] > 0
    assert {"mmcv", "mmdet", "mmsegmentation", "transformers", "pycocotools", "lvis"} <= {
        key.split(".")[-1] for key in frame.columns if key.startswith("provenance.libraries.")}
    assert "### Table 1" in capsys.readouterr().out
    first = {p: p.read_text() for p in results.rglob("*.json")}
    assert _run_all(config, results, cache) == 0
    assert {p: p.read_text() for p in results.rglob("*.json")} == first  # complete records are skipped
    assert "skipped" not in capsys.readouterr().err
    assert _run_all(config, results, cache, "--force") == 0
    rerun = {p: json.loads(p.read_text()) for p in results.rglob("*.json")}
    assert all(rerun[p]["metrics"] == json.loads(first[p])["metrics"] for p in first)  # deterministic
    assert not list(results.rglob("*.tmp"))
    assert {oct(p.stat().st_mode & 0o777) for p in results.rglob("*.json")} == {oct(0o666 & ~_umask())}


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_checkpoint_hash_in_record(tmp_path, world):
    import open_clip
    import torch

    path = tmp_path / "clip.pt"
    torch.save(open_clip.create_model("utabench-clip-tiny").state_dict(), path)
    results = tmp_path / "r"
    assert main(["run", "zeroshot-classification", "--backbone", "clip:utabench-clip-tiny", "--checkpoint",
                 str(path), "--dataset", f"imagenet-sketch:{world / 'imagenet-sketch'}", "--classes",
                 str(world / "classes.json"), "--results", str(results), "--cache-dir", str(tmp_path / "c")]) == 0
    record = json.loads(record_path(results, "clip:utabench-clip-tiny", "zeroshot-classification",
                                    "imagenet-sketch").read_text())
    from utabench.core.fingerprint import file_sha256 as sha256_file

    assert record["provenance"]["checkpoint_sha256"] == sha256_file(path)


def test_interrupted_run_keeps_finished_records(tmp_path, world, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(world / "imagenet-sketch", broken)
    victim = sorted(broken.rglob("*.JPEG"))[0]
    victim.write_bytes(b"not an image")
    datasets = {"zeroshot-classification": [
        {"name": "imagenet-1k", "type": "imagenet", "root": str(world / "imagenet"), "classes": str(world / "classes.json")},
        {"name": "sketch", "type": "imagenet-sketch", "root": str(broken), "classes": str(world / "classes.json")}]}
    config, results = _config(tmp_path, world, datasets), tmp_path / "results"
    assert _run_all(config, results, tmp_path / "cache") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and victim.name in err[0] and err[0].startswith("utabench: error:")
    assert [p.name for p in results.rglob("*.json")] == ["imagenet-1k.json"]
    assert not list(results.rglob("*.tmp"))
    assert _run_all(config, results, tmp_path / "cache", "--skip-corrupt") == 0
    frame = load_results(results)
    sketch = frame[frame.dataset == "sketch"].iloc[0]
    assert sketch["provenance.dataset.skipped_images"] == 1 and sketch["provenance.dataset.num_images"] == 19


def test_not_applicable_is_recorded(tmp_path, world):
    backbones = [{"name": "mim", "spec": "eva02:eva02_tiny_patch14_224", "image_size": 56}]
    config, results = _config(tmp_path, world, backbones=backbones), tmp_path / "results"
    assert _run_all(config, results, tmp_path / "cache") == 0
    frame = load_results(results)
    assert set(frame.status) == {"not_applicable"} and "n/a" in render(frame)


@pytest.mark.parametrize("argv,message", [
    (["run", "segmentation-x", "--backbone", "clip:utabench-clip-tiny", "--dataset", "imagenet:/x"],
     "argument TASK: invalid choice: 'segmentation-x' (choose from 'detection', 'few-shot', "
     "'finetune-classification', 'knn', 'linear-probe', 'llava-bench', 'retrieval', 'segmentation', "
     "'winogavil', 'zeroshot-classification')"),
    (["run", "retrieval", "--backbone", "vit:b", "--dataset", "flickr30k:/nonexistent"],
     "unknown backbone family 'vit'; known backbone families: clip, eva02, uta"),
    (["run", "retrieval", "--backbone", "clip:utabench-clip-tiny", "--dataset", "flickr30k:/nonexistent"],
     "dataset root /nonexistent does not exist; expected ROOT/dataset_flickr30k.json"),
    (["run", "retrieval", "--backbone", "clip:utabench-clip-tiny", "--dataset", "imagenet:/nonexistent"],
     "task retrieval reads dataset types flickr30k, coco, wds; got 'imagenet'"),
    (["run-all", "--config", "/nonexistent.yaml"], "config /nonexistent.yaml does not exist"),
    (["tables", "--results", "/nonexistent"], "results directory /nonexistent does not exist"),
])
def test_bad_input_one_line_nonzero_exit(tmp_path, capsys, argv, message):
    assert main(argv + (["--results", str(tmp_path / "r")] if argv[0] != "tables" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "r").exists()


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("clip", "eva02", "uta", "zeroshot-classification", "retrieval", "objectnet", "imagefolder"):
        assert name in out


def _record(results, backbone, task, dataset_type, metrics, paper=None, status="complete"):
    write_record(record_path(results, backbone, task, dataset_type), Record.from_dict({
        "status": status, "backbone": backbone, "task": task, "dataset": dataset_type,
        "dataset_type": dataset_type, "metrics": metrics, "paper": paper, "provenance": {}}))


def test_tables_show_paper_row_and_difference(tmp_path, capsys):
    results = tmp_path / "r"
    paper = {"method": "UTA", "model": "B/16@224", "pairs": "2B"}
    ours = {"imagenet": 77.5, "imagenet-a": 59.0, "imagenet-r": 84.1, "imagenet-v2": 69.0, "imagenet-sketch": 60.0,
            "objectnet": 68.3}
    for dataset_type, top1 in ours.items():
        _record(results, "uta-b16", "zeroshot-classification", dataset_type, {"top1": top1}, paper)
    _record(results, "uta-b16", "retrieval", "flickr30k", {f"{s}_r{k}": 90.0 for s in ("text", "image")
                                                           for k in (1, 5, 10)}, paper)
    assert main(["tables", "--results", str(results), "--format", "csv"]) == 0
    import io

    import pandas as pd

    rows = pd.read_csv(io.StringIO(capsys.readouterr().out))
    row = rows[(rows.table == 1) & (rows.column == "IN-1K")].iloc[0]
    assert (row.ours, row.paper, row.delta) == pytest.approx((77.5, 77.0, 0.5))
    average = rows[(rows.table == 1) & (rows.column == "Average")].iloc[0]
    assert average.ours == pytest.approx(sum(ours.values()) / 6) and average.paper == pytest.approx(69.8)
    flickr = rows[(rows.table == 2) & (rows.column == "Flickr30k text R@1")].iloc[0]
    assert flickr.paper == pytest.approx(91.3) and flickr.delta == pytest.approx(-1.3)
    assert rows[(rows.table == 2) & (rows.column == "COCO text R@1")].ours.isna().all()
    assert main(["tables", "--results", str(results)]) == 0
    markdown = capsys.readouterr().out
    assert "↳ paper: UTA B/16@224 2B" in markdown and "+0.5" in markdown and "Published (Table 1" in markdown


def test_a_job_being_run_elsewhere_is_skipped_and_a_dead_holder_is_taken_over(tmp_path, world, capsys):
    """Two runs on one results directory: a job whose record another process has locked is skipped (and named);
    the lock of a process that died is taken over."""
    import os
    import signal
    import subprocess
    import sys

    from utabench.harness.store import RecordLock

    config, results, cache = _config(tmp_path, world), tmp_path / "results", tmp_path / "cache"
    busy = record_path(results, "clip-tiny", "zeroshot-classification", "imagenet-1k")
    other = RecordLock(busy)
    assert other.acquire() is None  # as another process would hold it (flock: a second open file conflicts)
    assert _run_all(config, results, cache) == 0
    assert f"skipped, being run by pid {os.getpid()}" in capsys.readouterr().out
    assert not busy.exists() and record_path(results, "clip-tiny", "retrieval", "flickr30k").exists()
    other.release()
    assert not busy.with_suffix(".lock").exists()
    hold = ("import sys, time; from utabench.harness.store import RecordLock; RecordLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(busy)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    pid = holder.pid
    os.kill(pid, signal.SIGKILL)
    holder.wait()
    assert f'"pid": {pid}' in busy.with_suffix(".lock").read_text()  # left behind by the killed process
    assert _run_all(config, results, cache) == 0
    assert read_record(busy).status == "complete" and not busy.with_suffix(".lock").exists()


def test_task_options_under_the_task_and_the_earlier_layout(tmp_path, world, capsys):
    """`tasks: {task: {options, backbones, datasets}}` merges the task's options into each dataset (an entry's own
    `options:` win); options inline in a dataset entry, the earlier layout, are read with a deprecation note."""
    from utabench.harness.config import load_config

    ade = {"name": "ade20k", "type": "ade20k", "root": str(world / "ade20k")}
    cfg = {"backbones": [{"name": "a", "spec": "uta:tiny"}, {"name": "b", "spec": "uta:tiny", "seed": 1}],
           "tasks": {"segmentation": {"options": {"recipe": "upernet_world_ade20k", "iters": 5}, "backbones": ["a"],
                                      "datasets": [ade, {**ade, "name": "ade-2", "options": {"iters": 7}}]}}}
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(str(path))
    first, second = loaded.tasks["segmentation"]
    assert (first["recipe"], first["iters"], first["backbones"]) == ("upernet_world_ade20k", 5, ["a"])
    assert second["iters"] == 7 and not loaded.notes
    cfg["tasks"]["segmentation"] = [{**ade, "recipe": "upernet_world_ade20k"}]
    path.write_text(yaml.safe_dump(cfg))
    old = load_config(str(path))
    assert old.tasks["segmentation"][0]["recipe"] == "upernet_world_ade20k"
    assert len(old.notes) == 1 and "task options inside a dataset entry (recipe) are deprecated" in old.notes[0]
    cfg["tasks"]["segmentation"] = {"options": {"iter": 5}, "datasets": [ade]}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run-all", "--config", str(path), "--results", str(tmp_path / "r")]) == 2
    assert "tasks.segmentation.options: unknown key 'iter'; did you mean 'iters'?" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["embedded.yaml", "world-dense-random.yaml", "paper.yaml"])
def test_bundled_run_configs_load(name, monkeypatch):
    from utabench.core.configfile import bundled_config
    from utabench.harness.config import load_config

    monkeypatch.setenv("UTABENCH_DATA", "/data")
    monkeypatch.setenv("UTABENCH_CKPT", "/ckpt")
    cfg = load_config(str(bundled_config(name)))
    assert cfg.backbones and cfg.tasks and not cfg.notes
