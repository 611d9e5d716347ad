"""Why `run-all --parallel` runs tiny trainings side by side: one world-student training on all the threads against
the same training as several 1-thread processes at once, in one run, as images per second.

Each training is `utabench pretrain uta` on the embedded world's student config (a randomly initialised teacher: the
speed is the same as the trained one's) for `--steps` steps, with the config's `threads` set for the run; the figure is
the trainer's own images/s at its last step, summed over the processes that ran at once.

    python bench/parallel_training.py --cache-dir ~/.cache/utabench --threads 2 --steps 150
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from utabench.pretrain.config import config_path, read_raw


def _config(folder: Path, steps: int, threads: int) -> Path:
    raw = read_raw(config_path("world-student.yaml"))
    raw.update(teacher={"spec": "clip:utabench-clip-world"}, teacher_cache=False, threads=threads)
    raw["optim"]["steps"] = steps
    path = folder / f"student-{threads}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train_at_once(folder: Path, cache: str, config: Path, copies: int, tag: str) -> float:
    """Start `copies` trainings together; their summed images/s at the end."""
    runs = []
    for i in range(copies):
        out = folder / f"{tag}-{i}"
        runs.append((out, subprocess.Popen([sys.executable, "-m", "utabench.harness.cli", "pretrain", "uta", "--config",
                                            str(config), "--out", str(out), "--cache-dir", cache, "--no-progress"],
                                           stdout=subprocess.DEVNULL)))
    total = 0.0
    for out, run in runs:
        if run.wait() != 0:
            raise SystemExit(f"the training into {out} failed")
        total += json.loads((out / "log.jsonl").read_text().splitlines()[-1])["images_per_second"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", required=True, help="where the embedded world is (generated if missing)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        together = _train_at_once(folder, args.cache_dir, _config(folder, args.steps, args.threads), 1, "one")
        apart = _train_at_once(folder, args.cache_dir, _config(folder, args.steps, 1), args.threads, "side-by-side")
    print(f"one training on {args.threads} threads:          {together:8.1f} images/s")
    print(f"{args.threads} trainings of 1 thread side by side: {apart:8.1f} images/s (summed)")
    print(f"ratio (side by side / one): {apart / together:.2f}x")


if __name__ == "__main__":
    main()
