"""Run a filled recipe with mmengine's Runner: fine-tune (resuming from the work directory's last checkpoint after an
interruption), then test; or test a fine-tuned checkpoint only.

mmengine reads checkpoints with `torch.load`, whose default on current torch is `weights_only=True`. mmengine's own
checkpoints would also hold its message hub's HistoryBuffer objects (numpy arrays and bound methods, which need
arbitrary unpickling); `PlainHistoryHook` stores them as plain lists instead and rebuilds them on load, so every
checkpoint utabench writes loads with `weights_only=True` and nothing else is ever unpickled.

Every checkpoint's `meta` also records the setup it was trained with (the shared `training/setup.py` record), so a
run that resumes a finished fine-tuning reports the setup that trained it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from utabench.core.context import Setup
from utabench.core.io import atomic_write
from utabench.core.logs import chatter_to, quiet
from utabench.training.setup import read_setup, setup_record


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def make_history_hook():
    """A hook (built lazily: mmengine is imported only for dense tasks) that keeps checkpoints weights-only."""
    from mmengine.hooks import Hook
    from mmengine.logging import HistoryBuffer

    class PlainHistoryHook(Hook):
        priority = "VERY_LOW"

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            hub = checkpoint.get("message_hub", {})
            hub["log_scalars"] = {name: {"history": buf._log_history.tolist(), "counts": buf._count_history.tolist(),
                                         "max_length": buf.max_length}
                                  for name, buf in hub.get("log_scalars", {}).items()}
            hub["runtime_info"] = _plain(hub.get("runtime_info", {}))

        def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
            hub = checkpoint.get("message_hub", {})
            hub["log_scalars"] = {name: HistoryBuffer(np.asarray(v["history"]), np.asarray(v["counts"]),
                                                      v["max_length"]) if isinstance(v, dict) else v
                                  for name, v in hub.get("log_scalars", {}).items()}

    return PlainHistoryHook()


def make_setup_hook(setup: Optional[Setup]):
    """A hook that writes `setup` into every checkpoint's meta and keeps the setup of the weights the runner ends
    with (`trained`): this run's if it saved a checkpoint, else the one of the checkpoint it resumed (None if that
    checkpoint predates the record)."""
    from mmengine.hooks import Hook

    class SetupHook(Hook):
        priority = "VERY_LOW"

        def __init__(self):
            self.trained: Optional[Setup] = None

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            if setup is not None:
                checkpoint.setdefault("meta", {}).update(setup_record(setup))
            self.trained = setup

        def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
            self.trained = read_setup(checkpoint.get("meta"))

    return SetupHook()


def last_checkpoint(work_dir: Path) -> Optional[Path]:
    marker = Path(work_dir) / "last_checkpoint"
    if marker.is_file():
        path = Path(marker.read_text().strip())
        if path.is_file():
            return path
    return None


def train_and_test(cfg, finetuned: Optional[str] = None, setup: Optional[Setup] = None
                   ) -> Tuple[Dict[str, float], float, float, Optional[Setup]]:
    """Fine-tune with `setup` (the filled config's `training_setup`) unless `finetuned` is given (then load it and only
    test); returns the test metrics, the seconds spent training (this run's part, after a resume) and testing, and
    the setup the tested weights were trained with (None when only testing). What the libraries print goes to the
    work directory's `console.log`."""
    from mmengine.runner import Runner

    console = Path(cfg.work_dir) / "console.log"  # mmengine's, mmdet's, pycocotools' and lvis' prints and warnings
    with chatter_to(console), quiet("", "mmengine"):  # mmengine logs at INFO to the root logger and its own
        if finetuned:
            cfg.load_from = str(finetuned)
            cfg.train_dataloader, cfg.train_cfg, cfg.optim_wrapper, cfg.param_scheduler = None, None, None, None
            runner = Runner.from_cfg(cfg)
            start = time.perf_counter()
            return dict(runner.test()), 0.0, time.perf_counter() - start, None
        resume_from = last_checkpoint(Path(cfg.work_dir))
        cfg.resume = resume_from is not None
        cfg.load_from = str(resume_from) if resume_from else None
        runner = Runner.from_cfg(cfg)
        runner.register_hook(make_history_hook())
        setups = make_setup_hook(setup)
        runner.register_hook(setups)
        start = time.perf_counter()
        runner.train()
        trained = time.perf_counter()
        return dict(runner.test()), trained - start, time.perf_counter() - trained, setups.trained


def export_finetuned(work_dir: Path) -> Path:
    """The last checkpoint's weights alone (no optimiser or scheduler state) as `finetuned.pth`, the file
    `--eval-only` takes."""
    import torch

    state = torch.load(last_checkpoint(work_dir), map_location="cpu", weights_only=True)
    weights = {"meta": state.get("meta", {}), "state_dict": state["state_dict"]}
    return atomic_write(Path(work_dir) / "finetuned.pth", lambda tmp: torch.save(weights, tmp))


def training_leftovers(work_dir: Path) -> List[Path]:
    """The resumable training state (mmengine's iteration checkpoints and their marker), not needed once the
    record is written."""
    return sorted(Path(work_dir).glob("iter_*.pth")) + [Path(work_dir) / "last_checkpoint"]
