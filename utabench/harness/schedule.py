"""The rule by which `run-all --parallel` starts stages, and the time left that follows from it.

A stage is ready when the stages it needs have ended. Ready stages start in `priority` order (pretraining first, then
the longest by its estimate, then config order) while `has_room`: a worker is free and the stage's threads fit the
budget beside the running ones. harness/parallel.py schedules the real stages by this rule; `time_left` simulates it
over the estimates, a running stage counting what its estimate has left. So the time left follows the packing: while
the teacher trains on every thread nothing runs beside it, and a backbone's jobs wait for its pretraining. A stage
without an estimate counts as 0 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Planned:
    seconds: float
    threads: int
    needs: Tuple[str, ...] = ()
    pretrain: bool = False
    order: int = 0


def priority(stage: Planned) -> tuple:
    return (not stage.pretrain, -stage.seconds, stage.order)


def has_room(running: int, used_threads: int, threads: int, workers: int, budget: int) -> bool:
    """Whether a stage of `threads` may start beside `running` stages that use `used_threads` (alone, any stage may)."""
    return running < workers and (running == 0 or used_threads + threads <= budget)


def time_left(pending: Dict[str, Planned], running: Dict[str, Planned], workers: int, budget: int) -> float:
    """Seconds until the last stage ends; `running` stages' `seconds` are what they have left."""
    clock, done = 0.0, set()
    ends = {name: stage.seconds for name, stage in running.items()}
    threads = {name: stage.threads for name, stage in running.items()}
    waiting = dict(pending)
    while waiting or ends:
        ready = sorted((name for name, stage in waiting.items() if all(n in done for n in stage.needs)),
                       key=lambda name: priority(waiting[name]))
        for name in ready:
            stage = waiting[name]
            if not has_room(len(ends), sum(threads.values()), stage.threads, workers, budget):
                break
            del waiting[name]
            ends[name], threads[name] = clock + stage.seconds, stage.threads
        if not ends:  # what is left needs a stage that is not planned: nothing more can be simulated
            break
        name = min(ends, key=ends.get)
        clock = max(clock, ends.pop(name))
        threads.pop(name)
        done.add(name)
    return clock
