"""Stage lines a person can follow: before each stage (world, pretraining, job) one line with its estimated time
and what the run has left; the estimate is what the same stage took last time on this machine.

Times are kept in `<cache>/stage-times.json` by stage key (a job's backbone, task and dataset; a pretraining run's
backbone and objective; the world), written atomically after each stage. A stage this machine has not run yet takes
its estimate from `configs/embedded-stage-times.json` (the embedded default's stages, measured on 2 CPU cores), else
it has none ("est. ?").

The bundled times are scaled to the machine at hand: by the training and evaluation stages it has already run (their
times over the bundled ones, once they add up to CALIBRATED_AFTER seconds of bundled time; the world's generation is
other work, numpy and PIL, and is left out), and before that by `probe`, about a second of training on one thread,
measured once per cache against the same probe on the machine of the bundled times.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

from utabench.core.configfile import bundled_config
from utabench.core.io import atomic_write_json
from utabench.core.threads import cpu_threads

REFERENCE_TIMES = "embedded-stage-times.json"
PROBE = "machine:probe"  # the key of `probe()`'s seconds, here and in the bundled times
CALIBRATED_AFTER = 120.0  # seconds of bundled time this machine has run before its own ratio replaces the probe's
CALIBRATING = ("pretrain:", "job:")  # the stages whose times calibrate: training and evaluation


def probe() -> float:
    """Seconds of a fixed small training workload on one thread (a 4-block transformer of width 192 on 8 x 65
    tokens, 4 AdamW steps; the best of 3): how fast this machine trains the embedded world's tiny models."""
    import torch


    with cpu_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = torch.nn.TransformerEncoderLayer(192, 3, 768, batch_first=True, norm_first=True)
        model = torch.nn.TransformerEncoder(block, 4, enable_nested_tensor=False)
        tokens, optimizer = torch.randn(8, 65, 192), torch.optim.AdamW(model.parameters())
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(4):
                model(tokens).square().mean().backward()
                optimizer.step()
                optimizer.zero_grad()
            best = min(best, time.perf_counter() - start)
    return best


def _read_times(path: Path) -> Dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}  # missing or damaged: it only costs the estimates


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    def __init__(self, cache_dir: Optional[Path], log: Callable[[str], None] = print):
        self.path = Path(cache_dir) / "stage-times.json" if cache_dir else None
        self.log = log
        self.times: Dict[str, float] = _read_times(self.path) if self.path is not None else {}
        self.reference = _read_times(bundled_config(REFERENCE_TIMES))
        self.started = time.perf_counter()

    def estimate(self, key: str) -> Optional[float]:
        """What the stage took here last time, else its bundled time scaled to this machine, else None."""
        if key in self.times:
            return self.times[key]
        return self.reference[key] * self.scale() if key in self.reference else None

    def scale(self) -> float:
        """This machine's time for a bundled stage over the bundled time: from the bundled stages it has run, else
        from the probe (measured once, by the main process, which keeps the times; 1 without either)."""
        ran = [key for key in self.times if key in self.reference and key.startswith(CALIBRATING)
               and self.reference[key] > 0]
        bundled = sum(self.reference[key] for key in ran)
        if bundled >= CALIBRATED_AFTER:
            return sum(self.times[key] for key in ran) / bundled
        if PROBE not in self.reference or (PROBE not in self.times and self.path is None):
            return 1.0
        if PROBE not in self.times:
            self.record({PROBE: probe()})
        return self.times[PROBE] / self.reference[PROBE]

    def start(self, key: str, label: str, after: Iterable[str] = ()) -> float:
        """Print the stage's line (`after`: the keys of the stages still to come, for the time left); returns the
        start time to give `done`."""
        known = self.estimate(key)
        rest = [self.estimate(k) for k in after]
        left = known + sum(rest) if known is not None and all(r is not None for r in rest) else None
        self.announce(label, known, left)
        return time.perf_counter()

    def announce(self, label: str, known: Optional[float], left: Optional[float]) -> None:
        """A stage's line: its estimate and the time the run has left (None: unknown)."""
        left_text = f"; about {_duration(left)} left" if left is not None else ""
        self.log(f"… {label} (est. {_duration(known) if known is not None else '?'}{left_text})")

    def done(self, key: str, start: float) -> float:
        seconds = time.perf_counter() - start
        self.record({key: seconds})
        return seconds

    def record(self, times: Dict[str, float]) -> None:
        """Keep stages' times in seconds (measured here or by a worker process)."""
        self.times.update({key: round(seconds, 4 if key == PROBE else 2) for key, seconds in times.items()})
        if self.path is not None and times:
            atomic_write_json(self.path, self.times)

    def elapsed(self) -> str:
        return _duration(time.perf_counter() - self.started)
