"""A spawned worker process's guard against outliving its parent: a parent that is killed (SIGKILL, the OOM killer,
`timeout`'s SIGTERM to it alone) gets no chance to end its workers, which would otherwise run on as orphans, holding
their inherited output pipes open (so whoever reads the parent's output never sees it end)."""

from __future__ import annotations

import os
import threading
import time

PARENT_POLL_SECONDS = 1.0  # how often a worker checks that its parent is alive


def _end_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def exit_with_parent(parent: int) -> None:
    """Call first in a worker process, with the parent's pid as the parent saw it (`os.getpid()` there: a worker that
    asked `os.getppid()` itself after its parent was already gone would get its new parent's): it exits within about a
    second of its parent's end. What utabench's workers write is atomic and their record locks are the kernel's, so
    nothing is left half done."""
    threading.Thread(target=_end_with, args=(parent,), daemon=True).start()
