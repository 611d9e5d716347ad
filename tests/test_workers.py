"""run-all --parallel's worker processes (harness/workers.py): replies come back by tag, a call's exception is raised
in the parent, and neither a worker that dies nor a busy worker at close makes the parent wait without end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utabench.core.errors import UtabenchError
from utabench.harness.workers import WorkerPool

_STATE = {}


def _remember(value):
    _STATE["value"] = value


def _recall(extra):
    return _STATE.get("value"), extra, os.getpid()


def _fail(message):
    raise UtabenchError(message)


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _sleep(seconds):
    time.sleep(seconds)


def _refuse():
    raise UtabenchError("the initializer failed")


def _note_pid_and_sleep(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(600)


def _gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie waiting for a reaper counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True


def test_replies_come_back_by_tag_from_initialised_workers():
    pool = WorkerPool(2, _remember, ("set up",))
    try:
        pool.submit("a", _recall, 1)
        pool.submit("b", _recall, 2)
        assert pool.idle() == 0
        replies = dict(pool.next_reply() for _ in range(2))
        assert {tag: reply[:2] for tag, reply in replies.items()} == {"a": ("set up", 1), "b": ("set up", 2)}
        assert replies["a"][2] != replies["b"][2] != os.getpid()  # two worker processes
        pool.submit("c", _fail, "stage c is broken")
        with pytest.raises(UtabenchError, match="stage c is broken"):
            pool.next_reply()
        assert pool.idle() == 2
    finally:
        pool.close()


def test_a_dead_worker_is_an_error_not_a_wait():
    pool = WorkerPool(2, _remember, (None,))
    began = time.monotonic()
    try:
        pool.submit("[uta-student] pretraining", _die)
        pool.submit("sleeper", _sleep, 600)
        with pytest.raises(UtabenchError, match=r"running \[uta-student\] pretraining died \(killed by signal 9"):
            pool.next_reply()
    finally:
        pool.close()  # terminates the sleeper
    assert time.monotonic() - began < 120  # the sleeper was terminated, not waited for


def test_a_failed_initializer_is_raised_by_the_first_call():
    pool = WorkerPool(1, _refuse)
    try:
        pool.submit("x", _recall, 0)
        with pytest.raises(UtabenchError, match="the initializer failed"):
            pool.next_reply()
    finally:
        pool.close()


def test_a_worker_whose_parent_is_killed_ends_too(tmp_path):
    """SIGKILL gives the parent no chance to end its workers: each must notice and exit, not run on as an orphan."""
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); "
        "from test_workers import _note_pid_and_sleep, _remember; "
        "from utabench.harness.workers import WorkerPool; "
        "pool = WorkerPool(1, _remember, (None,)); pool.submit('sleep', _note_pid_and_sleep, sys.argv[2]); "
        "time.sleep(600)"), str(Path(__file__).parent), str(pid_file)])
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "the worker never started"
            time.sleep(0.2)
        worker = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while not _gone(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived its killed parent"
            time.sleep(0.2)
    finally:
        parent.kill()


def _children(pid: int) -> set:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def test_world_generation_workers_end_when_their_parent_is_killed(tmp_path):
    """The embedded world's generation processes (a ProcessPoolExecutor) exit too: a parent killed by `timeout` or
    the OOM killer once left them running for good, holding its output pipes open."""
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from utabench.world.build import generate_world; "
        "generate_world(Path(sys.argv[1]), workers=2)"), str(tmp_path / "world")])
    try:
        deadline, workers = time.monotonic() + 120, set()
        while len(workers) < 3:  # the two workers and multiprocessing's resource tracker
            assert time.monotonic() < deadline and parent.poll() is None, "the workers never started"
            workers = _children(parent.pid)
            time.sleep(0.2)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while not all(_gone(pid) for pid in workers):
            assert time.monotonic() < deadline, f"{[p for p in workers if not _gone(p)]} outlived their killed parent"
            time.sleep(0.2)
    finally:
        parent.kill()
