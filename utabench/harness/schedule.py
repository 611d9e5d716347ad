"""The rule by which `run-all --parallel` starts stages, and the time left that follows from it.

A stage is ready when the stages it needs have ended. Ready stages start in `priority` order (pretraining first, then
the longest by its estimate, then config order) while `has_room`: a worker is free and the stage's threads fit the
budget beside the running ones. Distillation runs that share a teacher's cached tokens (`shares`, see
pretrain/teacher_cache.py) start one at a time while other work is ready: the first computes the tokens, and one
started while it runs goes after the ready jobs, so that it reads the epochs the first wrote instead of running the
teacher a second time beside it (the embedded world's first two students each ran it: about 30 core-seconds).
harness/parallel.py schedules the real stages by this rule; `time_left` simulates it over the estimates, a running
stage counting what its estimate has left. So the time left follows the packing: while the teacher trains on every
thread nothing runs beside it, and a backbone's jobs wait for its pretraining. A stage without an estimate counts as
0 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Planned:
    seconds: float
    threads: int
    needs: Tuple[str, ...] = ()
    pretrain: bool = False
    order: int = 0
    shares: str = ""  # a distillation run's teacher-token key: runs with the same one read each other's tokens


def priority(stage: Planned, busy: frozenset = frozenset()) -> tuple:
    """Sort key: pretraining, then jobs, then pretraining whose teacher tokens a running stage (`busy`) computes."""
    rank = 2 if stage.shares and stage.shares in busy else 0 if stage.pretrain else 1
    return (rank, -stage.seconds, stage.order)


def has_room(running: int, used_threads: int, threads: int, workers: int, budget: int) -> bool:
    """Whether a stage of `threads` may start beside `running` stages that use `used_threads` (alone, any stage may)."""
    return running < workers and (running == 0 or used_threads + threads <= budget)


def next_to_start(ready: Dict[str, Planned], running: Dict[str, Planned], workers: int,
                  budget: int) -> Optional[str]:
    """The ready stage to start beside `running` now: the first by priority, or None when it has no room (a smaller
    one does not overtake it)."""
    if not ready:
        return None
    busy = frozenset(stage.shares for stage in running.values() if stage.shares)
    name = min(ready, key=lambda n: priority(ready[n], busy))
    used = sum(stage.threads for stage in running.values())
    return name if has_room(len(running), used, ready[name].threads, workers, budget) else None


def time_left(pending: Dict[str, Planned], running: Dict[str, Planned], workers: int, budget: int) -> float:
    """Seconds until the last stage ends; `running` stages' `seconds` are what they have left."""
    clock, done = 0.0, set()
    active = dict(running)
    ends = {name: stage.seconds for name, stage in running.items()}
    waiting = dict(pending)
    while waiting or ends:
        while True:
            ready = {name: stage for name, stage in waiting.items() if all(n in done for n in stage.needs)}
            name = next_to_start(ready, active, workers, budget)
            if name is None:
                break
            active[name] = waiting.pop(name)
            ends[name] = clock + active[name].seconds
        if not ends:  # what is left needs a stage that is not planned: nothing more can be simulated
            break
        name = min(ends, key=ends.get)
        clock = max(clock, ends.pop(name))
        del active[name]
        done.add(name)
    return clock
