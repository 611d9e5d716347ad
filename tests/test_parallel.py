"""run-all --parallel: stages on worker processes give the serial run's records and checkpoints bit for bit (threads
fixed per stage), a worker's failure is one line with a non-zero exit, and a pretraining config's `threads` is checked
and applied."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from utabench.core.errors import UtabenchError
from utabench.core.threads import cpu_threads
from utabench.harness.cli import main
from utabench.harness.parallel import auto_parallel
from utabench.pretrain.config import build_config, config_path, read_raw
from utabench.training.fingerprint import run_fingerprint

COUNTS = {"val": 2, "v2": 1, "sketch": 1, "a": 1, "r": 1, "objectnet": 1, "flickr30k": 6, "coco": 6, "train": 7,
          "pairs": 130, "det_train": 0, "seg_train": 0, "llava_pretrain": 0, "llava_instruct": 0}


def _config(tmp_path, backbones=None):
    world_sets = {
        "zeroshot-classification": [{"name": "imagenet-1k", "type": "imagenet", "root": "{world}/imagenet",
                                     "classes": "{world}/classes.json", "templates": "{world}/templates.txt"}],
        "retrieval": [{"name": "flickr30k", "type": "flickr30k", "root": "{world}/flickr30k"}]}
    cfg = {"settings": {"device": "cpu"}, "world": {"seed": 0, "counts": COUNTS},
           "backbones": backbones or [{"name": "clip-tiny", "spec": "clip:utabench-clip-tiny"},
                                      {"name": "uta-student", "pretrain": "world-student.yaml"},
                                      {"name": "world-clip-teacher", "pretrain": "world-clip.yaml"}],
           "tasks": world_sets}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(tmp_path, config, name, *flags):
    return main(["run-all", "--config", str(config), "--results", str(tmp_path / name / "results"),
                 "--cache-dir", str(tmp_path / name / "cache"), "--no-progress", *flags])


def _records(folder):
    return {p.relative_to(folder).as_posix(): json.loads(p.read_text())["metrics"] for p in folder.rglob("*.json")}


def _checkpoints(cache):
    """The trained weights' digests (the folders' names hold the cache's world path, so differ between caches)."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (cache / "pretrain").glob("*/final.safetensors"))


def test_parallel_run_all_gives_the_serial_bits(tmp_path, capsys):
    config = _config(tmp_path)
    assert _run(tmp_path, config, "serial", "--parallel", "1", "--threads", "1") == 0
    serial = capsys.readouterr().out
    assert _run(tmp_path, config, "parallel", "--parallel", "2", "--threads", "2") == 0
    out = capsys.readouterr().out
    # the teacher first (the student waits for it), every stage announced once, the workers' lines printed here
    assert out.index("[world-clip-teacher] pretraining clip") < out.index("[uta-student] pretraining uta")
    assert out.count("] pretraining ") == serial.count("] pretraining ") == 2
    assert out.count("[uta-student] zeroshot-classification / imagenet-1k: top1") == 1
    assert out.count("[uta-student] FLOPs per image and step: student") == 1  # a worker's line names its stage
    assert "run-all done in" in out and "6 complete (of 6 jobs)" in out
    ours, theirs = _records(tmp_path / "parallel" / "results"), _records(tmp_path / "serial" / "results")
    assert len(ours) == 6 and ours == theirs
    checkpoints = _checkpoints(tmp_path / "parallel" / "cache")
    assert len(checkpoints) == 2 and checkpoints == _checkpoints(tmp_path / "serial" / "cache")
    times = json.loads((tmp_path / "parallel" / "cache" / "stage-times.json").read_text())
    assert {"pretrain:uta-student:uta", "job:uta-student/retrieval/flickr30k"} <= set(times)
    assert _run(tmp_path, config, "parallel", "--parallel", "2", "--threads", "2") == 0  # all done: nothing runs
    assert "6 skipped (of 6 jobs)" in capsys.readouterr().out


def test_two_names_for_one_pretraining_run(tmp_path, capsys):
    config = _config(tmp_path, [{"name": "uta-a", "pretrain": "world-student.yaml"},
                                {"name": "uta-b", "pretrain": "world-student.yaml", "objective": "uta"}])
    assert _run(tmp_path, config, "run", "--parallel", "2", "--threads", "2") == 0
    out = capsys.readouterr().out
    assert out.count("] pretraining ") == 2  # the teacher (named by the student's config) and the student, once
    records = _records(tmp_path / "run" / "results")
    assert len(records) == 4 and records["uta-a/retrieval/flickr30k.json"] == records["uta-b/retrieval/flickr30k.json"]


def test_a_failing_stage_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    config = _config(tmp_path, [{"name": "clip-tiny", "spec": "clip:utabench-clip-tiny"},
                                {"name": "broken", "spec": "clip:utabench-clip-tiny", "checkpoint": str(broken)}])
    assert _run(tmp_path, config, "run", "--parallel", "2", "--threads", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith("utabench: error: ") and "broken.safetensors" in err and "Traceback" not in err


def test_auto_parallel():
    assert auto_parallel("auto", "cpu", 1, 2) == 2
    assert auto_parallel("auto", "cpu", 1, 64) == 4
    assert auto_parallel("auto", "cuda", 1, 64) == 1
    assert auto_parallel("auto", "cpu", 8, 64) == 1  # under torchrun
    assert auto_parallel(3, "cuda", 1, 1) == 3


def test_bad_parallel_value_is_refused(tmp_path, capsys):
    assert _run(tmp_path, _config(tmp_path), "run", "--parallel", "0") == 2
    assert "parallel" in capsys.readouterr().err


def test_pretraining_threads_are_checked_applied_and_fingerprinted():
    raw = read_raw(config_path("world-student.yaml"))
    raw["teacher"] = {"spec": "clip:utabench-clip-world"}
    with pytest.raises(UtabenchError, match="threads"):
        build_config({**raw, "threads": 0})
    unset = build_config({k: v for k, v in raw.items() if k != "threads"})
    assert unset["threads"] is None
    assert "threads" not in json.dumps(sorted(k for k in unset if unset[k] is not None))
    one, two = build_config({**raw, "threads": 1}), build_config({**raw, "threads": 2})
    assert len({run_fingerprint(unset), run_fingerprint(one), run_fingerprint(two)}) == 3
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_time_left_follows_the_packing():
    from utabench.harness.schedule import Planned, time_left

    # a teacher on both threads, then two 1-thread students side by side, then a job that waits for one of them
    teacher = Planned(100.0, 2, pretrain=True)
    stages = {"teacher": teacher, "uta": Planned(50.0, 1, ("teacher",), pretrain=True),
              "fd": Planned(40.0, 1, ("teacher",), pretrain=True), "uta-job": Planned(30.0, 1, ("uta",))}
    assert time_left(stages, {}, workers=2, budget=2) == 180.0  # 100, then 50 beside 40 + 30
    # the teacher half done: what it has left counts; one worker runs everything in turn
    rest = {k: v for k, v in stages.items() if k != "teacher"}
    assert time_left(rest, {"teacher": Planned(50.0, 2)}, workers=2, budget=2) == 130.0
    assert time_left(stages, {}, workers=1, budget=2) == 220.0
    assert time_left({"job": Planned(5.0, 1, ("gone",))}, {}, workers=2, budget=2) == 0.0  # unplanned need


def test_a_run_sharing_teacher_tokens_waits_for_the_ready_jobs():
    from utabench.harness.schedule import Planned, next_to_start, time_left

    # two students that share the teacher's cached tokens and a job: the second student goes after the job while the
    # first computes the tokens (100, then the first student beside the job, then the second)
    a, b = (Planned(50.0, 1, ("teacher",), pretrain=True, shares="k") for _ in range(2))
    stages = {"teacher": Planned(100.0, 2, pretrain=True), "a": a, "b": b, "job": Planned(60.0, 1)}
    assert time_left(stages, {}, workers=2, budget=2) == 200.0
    unshared = {**stages, "a": Planned(50.0, 1, ("teacher",), pretrain=True),
                "b": Planned(50.0, 1, ("teacher",), pretrain=True)}
    assert time_left(unshared, {}, workers=2, budget=2) == 210.0  # both students first, the job after them
    assert next_to_start({"b": b, "job": stages["job"]}, {"a": a}, 2, 2) == "job"
    assert next_to_start({"b": b}, {"a": a}, 2, 2) == "b"  # nothing else is ready: it starts (and runs the teacher)
    assert next_to_start({"b": b, "job": stages["job"]}, {}, 2, 2) == "b"  # the first of its group is a leader
    assert next_to_start({"job": stages["job"]}, {"t": stages["teacher"]}, 2, 2) is None  # no room beside the teacher


def test_students_of_one_teacher_share_a_token_key():
    from utabench.pretrain.config import load_pretrain_config
    from utabench.pretrain.teacher_cache import sharing_key

    folder = Path(__file__).resolve().parents[1] / "utabench" / "configs" / "pretrain"
    keys = {objective: sharing_key(load_pretrain_config(str(folder / "world-student.yaml"), objective))
            for objective in ("uta", "fd", "uta+mim")}
    keys["mim"] = sharing_key(load_pretrain_config(str(folder / "world-student-mim.yaml")))
    assert len(set(keys.values())) == 1 and keys["uta"]
    assert sharing_key(load_pretrain_config(str(folder / "world-clip.yaml"))) == ""  # no teacher tokens kept
    other = load_pretrain_config(str(folder / "world-student.yaml"), "uta")
    other["seed"] = 1
    assert sharing_key(other) != keys["uta"]
