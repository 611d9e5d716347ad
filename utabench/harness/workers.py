"""Spawned worker processes for `run-all --parallel`, each on a pipe of its own: a call goes to an idle worker, and the
next reply comes from whichever worker answers first. Nothing is shared between the workers (no queue lock a killed
process could leave held), and the parent waits on each busy worker's pipe and its process at once, so a worker that
dies (killed, out of memory) is an error naming what it ran, never a wait without end; `close` ends every worker
within seconds, busy or not, and a worker whose parent is killed ends by itself."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, List, Optional, Tuple

from utabench.core.errors import UtabenchError
from utabench.core.orphans import exit_with_parent

JOIN_SECONDS = 5.0  # how long `close` waits for a worker before it is terminated, and again before it is killed


def _serve(conn: Connection, parent: int, initializer: Callable, initargs: tuple) -> None:
    """A worker's loop: run the initializer, then each call it is sent, and send back (True, result) or
    (False, exception). A failed initializer is raised by every call (a worker that exited instead would look dead)."""
    exit_with_parent(parent)
    failure: Optional[BaseException] = None
    try:
        initializer(*initargs)
    except BaseException as exc:  # noqa: B036  (raised in the parent by the first call)
        failure = exc
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        function, args = message
        try:
            if failure is not None:
                raise failure
            reply: Tuple[bool, Any] = (True, function(*args))
        except BaseException as exc:  # noqa: B036  (sent back and raised in the parent)
            reply = (False, exc)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send((False, RuntimeError(f"the worker's reply could not be sent back ({exc}): "
                                           f"{reply[1]!r}"[:2000])))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    tag: Optional[str] = None  # what it runs now; None when idle


def _died(worker: _Worker) -> UtabenchError:
    worker.process.join(JOIN_SECONDS)
    code = worker.process.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return UtabenchError(f"the worker process running {worker.tag} died ({how}; out of memory?); what finished is "
                         "kept: rerun to resume, with fewer --parallel workers if memory is short")


class WorkerPool:
    def __init__(self, count: int, initializer: Callable, initargs: tuple = ()):
        context = multiprocessing.get_context("spawn")
        self._workers: List[_Worker] = []
        try:
            for _ in range(count):
                parent, child = context.Pipe()
                process = context.Process(target=_serve, args=(child, os.getpid(), initializer, initargs),
                                          daemon=True)
                process.start()
                child.close()
                self._workers.append(_Worker(process, parent))
        except BaseException:
            self.close()
            raise

    def idle(self) -> int:
        return sum(worker.tag is None for worker in self._workers)

    def submit(self, tag: str, function: Callable, *args: Any) -> None:
        """Run `function(*args)` on an idle worker; `tag` names it in `next_reply` and in errors."""
        worker = next(worker for worker in self._workers if worker.tag is None)
        worker.tag = tag
        try:
            worker.conn.send((function, args))
        except OSError:  # it died before it read the call (its initializer was killed)
            raise _died(worker) from None

    def next_reply(self) -> Tuple[str, Any]:
        """The (tag, result) of the first call to finish; a call's exception is raised here, and so is a worker's
        death (UtabenchError)."""
        busy = [worker for worker in self._workers if worker.tag is not None]
        if not busy:
            raise RuntimeError("next_reply with nothing submitted")
        ready = wait([worker.conn for worker in busy] + [worker.process.sentinel for worker in busy])
        for worker in busy:  # a reply first: a worker may have answered and then ended
            if worker.conn in ready:
                try:
                    ok, value = worker.conn.recv()
                except EOFError:
                    break
                tag, worker.tag = worker.tag, None
                if not ok:
                    raise value
                return tag, value
        raise _died(next(worker for worker in busy if worker.conn in ready or worker.process.sentinel in ready))

    def close(self) -> None:
        """End every worker: idle ones are told to stop, busy ones are terminated; any still alive after
        JOIN_SECONDS is killed."""
        for worker in self._workers:
            try:
                if worker.tag is None and worker.process.is_alive():
                    worker.conn.send(None)
                else:
                    worker.process.terminate()
            except (OSError, ValueError):  # its pipe is already closed: it is ending
                worker.process.terminate()
        for worker in self._workers:
            worker.process.join(JOIN_SECONDS)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(JOIN_SECONDS)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
