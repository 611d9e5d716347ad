"""The time a parallel run-all has left: its remaining stages list-scheduled on the workers by their estimates.

The simulation follows the scheduler's rule (harness/parallel.py): a stage starts when the stages it needs have ended
and a worker and its threads are free, pretraining first, then the longest. A running stage counts with what its
estimate has left. So the figure follows the packing: while the teacher trains on every thread nothing runs beside
it, and a backbone's jobs wait for its pretraining. A stage without an estimate counts as 0 s.
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


def time_left(pending: Dict[str, Planned], running: Dict[str, Planned], workers: int, budget: int) -> float:
    """Seconds until the last stage ends; `running` stages' `seconds` are what they have left."""
    clock, done = 0.0, set()
    ends = {name: stage.seconds for name, stage in running.items()}
    threads = {name: stage.threads for name, stage in running.items()}
    waiting = dict(pending)
    while waiting or ends:
        ready = sorted((name for name, stage in waiting.items() if all(n in done for n in stage.needs)),
                       key=lambda name: (not waiting[name].pretrain, -waiting[name].seconds, waiting[name].order))
        for name in ready:
            stage = waiting[name]
            if len(ends) >= workers or (ends and sum(threads.values()) + stage.threads > budget):
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
