"""`run-all --launcher local`: a sweep's cells run as submitit jobs in parallel processes; one training job, signalled
as a preempted Slurm job would be, checkpoints, requeues itself and resumes; the records equal a serial run's;
`utabench status` names the failed cell and its log; `--launcher slurm` without Slurm is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utabench.harness.cli import main
from utabench.harness.launcher import cell_states

RECIPE = {"objective": "finetune", "layer_decay": 0.75, "ema": 0.9, "checkpoint_every": 2, "workers": 0,
          "optim": {"batch_size": 8, "steps": 40, "warmup_steps": 2, "lr": 1e-3, "min_lr": 1e-6,
                    "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05},
          "augment": {"scale": [0.5, 1.0]}, "eval": {"crop_pct": 1.0}, "drop_path": 0.1}


def _config(tmp_path: Path, world: Path, broken: bool) -> Path:
    (tmp_path / "ft.yaml").write_text(json.dumps(RECIPE))
    imagenet = {"type": "imagenet", "root": str(world / "imagenet"), "classes": str(world / "classes.json")}
    zeroshot = [{"name": "imagenet", **imagenet}, {"name": "imagenet-v2", "type": "imagenet-v2",
                                                   "root": str(world / "imagenetv2")}]
    if broken:  # a copy of the val set with one JPEG cut short: its cell fails in its job
        shutil.copytree(world / "imagenet", tmp_path / "broken")
        first = sorted((tmp_path / "broken" / "val").rglob("*.JPEG"))[0]
        first.write_bytes(first.read_bytes()[:200])
        zeroshot.append({**imagenet, "name": "broken", "root": str(tmp_path / "broken")})
    config = {"settings": {"device": "cpu", "batch_size": 8, "threads": 1},
              "backbones": ["uta:tiny", "clip:utabench-clip-tiny"],
              "tasks": {"zeroshot-classification": {"datasets": zeroshot},
                        "finetune-classification": {"options": {"recipe": str(tmp_path / "ft.yaml")},
                                                    "backbones": ["uta:tiny"],
                                                    "datasets": [{"name": "imagenet", **imagenet}]}}}
    path = tmp_path / ("broken.yaml" if broken else "sweep.yaml")
    path.write_text(json.dumps(config))
    return path


def _metrics(results: Path):
    return {str(p.relative_to(results)): json.loads(p.read_text())["metrics"] for p in results.glob("*/*/*.json")}


def _children(pid: int):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_local_sweep_with_a_preempted_training_job_equals_a_serial_run(world, tmp_path, capsys):
    results, cache = tmp_path / "sweep", tmp_path / "cache-sweep"
    command = [sys.executable, "-m", "utabench.harness.cli", "run-all", "--config", str(_config(tmp_path, world, True)),
               "--launcher", "local", "--gpus-per-job", "1", "--timeout-min", "30", "--results", str(results),
               "--cache-dir", str(cache), "--no-progress"]
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    manifest = results / ".sweep" / "manifest.json"
    deadline, signalled = time.time() + 300, None
    while signalled is None and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.5)
        if not manifest.is_file() or not list(cache.glob("finetune/*/checkpoints/step-*.pt")):
            continue
        cells = json.loads(manifest.read_text())["cells"]
        job = next(info for cell, info in cells.items() if "finetune-classification" in cell)
        for task in _children(int(job["job_id"])):  # the job's process (the local controller is its parent)
            os.kill(task, signal.SIGUSR2)  # what Slurm sends before preempting or timing out a job
            signalled = job
    output = sweep.communicate(timeout=600)[0]
    assert signalled is not None, output
    assert sweep.returncode == 1, output  # the broken cells failed
    log = Path(signalled["stdout"]).read_text() + Path(signalled["stderr"]).read_text()
    assert "this job is preempted" in log and "Calling checkpoint method." in log and "Requeued job" in log, log
    assert log.count("Starting with JobEnvironment") == 2 and "resuming from" in log, log  # it resumed, once
    assert "5 cells done, 2 failed" in output, output

    states = cell_states(results)
    assert sorted(cell for cell, s in states.items() if s["state"] == "failed") == [
        "clip_utabench-clip-tiny/zeroshot-classification/broken", "uta_tiny/zeroshot-classification/broken"]
    capsys.readouterr()
    assert main(["status", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    failed = next(line for line in out.splitlines() if line.startswith("failed"))
    assert "5 done, 0 running, 2 failed, 0 pending (7 cells)" in out and "CorruptImage" in failed
    assert Path(failed.rsplit("log ", 1)[1].rstrip(")")).is_file()

    serial = tmp_path / "serial"
    assert main(["run-all", "--config", str(_config(tmp_path, world, False)), "--results", str(serial),
                 "--cache-dir", str(tmp_path / "cache-serial"), "--no-progress"]) == 0
    swept = {k: v for k, v in _metrics(results).items() if "broken" not in k}
    assert swept == _metrics(serial) and len(swept) == 5


def test_slurm_without_sbatch_is_one_line(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["run-all", "--config", str(_config(tmp_path, world, False)), "--launcher", "slurm",
                 "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--launcher slurm needs Slurm's sbatch on PATH" in err[0]
    assert main(["run-all", "--config", str(_config(tmp_path, world, False)), "--launcher", "local",
                 "--gpus-per-job", "0", "--results", str(tmp_path / "r")]) == 2
    assert "--gpus-per-job: Input should be greater than 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_local_sweep_pretrains_first_then_evaluates_the_student(world, tmp_path):
    student = {"objective": "uta", "student": {"model": "world"}, "teacher": {"spec": "uta:world"},
               "data": {"type": "imagefolder", "root": str(world / "imagenet" / "train")},
               "optim": {"batch_size": 4, "steps": 2, "warmup_steps": 1}, "workers": 0}
    (tmp_path / "student.yaml").write_text(json.dumps(student))
    config = {"settings": {"device": "cpu", "batch_size": 8, "threads": 1},
              "backbones": [{"name": "student", "pretrain": str(tmp_path / "student.yaml")}],
              "tasks": {"zeroshot-classification": [{"name": "imagenet", "type": "imagenet",
                                                     "root": str(world / "imagenet"),
                                                     "classes": str(world / "classes.json")}]}}
    (tmp_path / "run.yaml").write_text(json.dumps(config))
    results = tmp_path / "r"
    assert main(["run-all", "--config", str(tmp_path / "run.yaml"), "--launcher", "local", "--gpus-per-job", "1",
                 "--timeout-min", "30", "--results", str(results), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"]) == 0
    cells = json.loads((results / ".sweep" / "manifest.json").read_text())["cells"]
    assert list(cells) == ["pretraining", "student/zeroshot-classification/imagenet"]
    assert "pretraining uta" in Path(cells["pretraining"]["stdout"]).read_text()
    assert list((tmp_path / "cache" / "pretrain").glob("uta-*/final.json"))
    record = json.loads((results / "student" / "zeroshot-classification" / "imagenet.json").read_text())
    assert record["status"] == "complete" and record["pretrain"]["objective"] == "uta"
    assert {cell: state["state"] for cell, state in cell_states(results).items()} == {
        "pretraining": "done", "student/zeroshot-classification/imagenet": "done"}


def test_status_reads_a_lock_without_taking_it(tmp_path):
    """A live holder on this host or any holder on another host is running; a dead pid's lock is not. Reading it
    never takes the lock (a status query must not make a run skip its job)."""
    import platform

    from utabench.harness.store import RecordLock

    lock = RecordLock(tmp_path / "r.json")
    assert not lock.is_held()
    assert lock.acquire() is None and lock.is_held()  # this process holds it
    other = RecordLock(tmp_path / "r.json")
    assert other.is_held() and other.acquire() is not None  # still held: is_held took nothing
    lock.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.path.write_text(json.dumps({"pid": int(dead.stdout), "host": platform.node()}))
    assert not lock.is_held()
    lock.path.write_text(json.dumps({"pid": 1, "host": "another-node"}))
    assert lock.is_held()
