"""The training loop shared by every pretraining recipe, ImageNet fine-tuning and LLaVA's two stages: AdamW, linear
warm-up then cosine, bf16 autocast on GPU, gradient clipping, gradient accumulation (`optim.grad_accum` micro-batches
per step), DDP under torchrun, progress, checkpoints and exact resume.

A recipe supplies the trained module, the dataset, the per-batch loss and the export of the finished model. It may
also supply `collate` (the loader's collate function), `build_optimizer(module)` and `build_scheduler(optimizer,
warmup_steps, total_steps)` (an object with `step`, `get_last_lr`, `state_dict`, `load_state_dict`; default: AdamW
with the BEiT weight-decay rule and warm-up + cosine), `after_step(step)` (e.g. an EMA update) and
`extra_state()` / `load_extra_state(state)` (saved with the checkpoint, e.g. the EMA weights). A
checkpoint (`checkpoints/step-XXXXXXXX.pt`, written atomically every `checkpoint_every` steps) holds the module,
optimiser, scheduler, step, RNG states and the configuration; data order is a function of the step (`sampler.py`),
so rerunning the same command continues exactly where the last checkpoint left off. A non-finite loss stops the run
with its step number before anything of that step is saved. The finished run's `final.json` holds the export's
metadata, the run fingerprint, the configuration, the step count and the setup it trained with (`setup.py`).

Validation (a config's `validation: {every, batch_size, ...}`, pretrain/config.py) needs the recipe's
`validation_set` (a dataset of fixed items) and `validation_loss(module, batch, device)` -> (mean loss, images). At
step 0, every `every` steps and at the last step, before that step's checkpoint, the module is scored on the whole
set: eval mode, no gradients, the run's precision, a loader with its own generator (the global RNGs that drop path
and the data draw from are not touched); under torchrun each rank scores every world-th batch and the sums are
added. A point is a `log.jsonl` line {step, validation_loss, train_loss, seconds}, `train_loss` being the mean loss
of the steps since the previous point, whose running sum the checkpoint carries, so a resumed run writes the curve an
uninterrupted one writes; `final.json` holds the curve (`validation_curve`). Its time is left out of images/s.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from utabench.core.checkpoint import read_state_dict
from utabench.core.context import Setup, resolve_precision
from utabench.core.distributed import DistInfo, StridedBatchSampler, barrier
from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write, atomic_write_json, atomic_write_text, read_jsonl
from utabench.training.fingerprint import differences, run_fingerprint
from utabench.training.optim import fused_adamw, param_groups
from utabench.training.rng import rng_state, set_rng_state
from utabench.training.sampler import StepSampler
from utabench.training.schedule import warmup_cosine
from utabench.training.setup import setup_record

STATE_FORMAT = "utabench-pretrain-state/1"  # the format name every checkpoint so far carries, whatever it trained


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log's lines up to `step` (where a resumed run continues), so no step is logged twice; a torn last
    line goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(kept))


def validation_curve(log_path: Path) -> Dict[str, List]:
    """The validation points of a run's log, compactly: {steps, loss, train_loss} (lists of one length; losses to
    6 decimals, `train_loss` None at step 0)."""
    rows = [row for row in read_jsonl(log_path, "training log") if "validation_loss" in row]

    def rounded(value):
        return None if value is None else round(float(value), 6)
    return {"steps": [int(row["step"]) for row in rows], "loss": [rounded(row["validation_loss"]) for row in rows],
            "train_loss": [rounded(row.get("train_loss")) for row in rows]}


def finished_run(out_dir: Path, cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The metadata (`final.json`) of a run of this configuration that finished in `out_dir`, or None."""
    done = Path(out_dir) / "final.json"
    if done.is_file():
        meta = json.loads(done.read_text())
        if meta.get("fingerprint") == run_fingerprint(cfg):
            return meta
    return None


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    found = sorted((Path(out_dir) / "checkpoints").glob("step-*.pt"))
    return found[-1] if found else None


class Trainer:
    def __init__(self, cfg: Dict[str, Any], recipe, out_dir: Path, device: str = "cpu", dist: DistInfo = DistInfo(),
                 progress: bool = True, log: Callable[[str], None] = print, keep_checkpoints: int = 2):
        self.cfg, self.recipe, self.out_dir = cfg, recipe, Path(out_dir)
        self.device, self.dist, self.progress, self.log = torch.device(device), dist, progress, log
        self.keep_checkpoints = keep_checkpoints
        self.precision = resolve_precision(cfg["precision"], self.device.type)  # checked by the recipe's schema
        optim = cfg["optim"]
        self.global_batch = int(optim["batch_size"])
        self.grad_accum = int(optim.get("grad_accum") or 1)
        if self.global_batch % (self.grad_accum * dist.world_size):
            raise UtabenchError(f"batch size {self.global_batch} does not split into {self.grad_accum} accumulation "
                                f"steps on {dist.world_size} processes; change optim.batch_size or optim.grad_accum")
        self.steps_per_epoch = len(recipe.dataset) // self.global_batch
        if self.steps_per_epoch < 1:
            raise UtabenchError(f"the data has {len(recipe.dataset)} images, fewer than one batch of "
                                f"{self.global_batch}; lower optim.batch_size or add images")
        self.total_steps = int(optim.get("steps") or round(optim["epochs"] * self.steps_per_epoch))
        self.warmup_steps = int(optim.get("warmup_steps") or round(optim["warmup_epochs"] * self.steps_per_epoch))
        self.warmup_steps = min(max(1, self.warmup_steps), self.total_steps)
        self.validation = cfg.get("validation")
        if self.validation and not hasattr(recipe, "validation_loss"):
            raise UtabenchError(f"objective {cfg.get('objective')}'s recipe has no validation loss; remove "
                                "`validation`")
        self._window = [0.0, 0]  # the training losses since the last validation point: sum, steps

    def setup(self) -> Setup:
        """How this run trains: the global batch, the resolved precision, device type, processes, accumulation."""
        return Setup(self.global_batch, self.precision, self.device.type, self.dist.world_size, self.grad_accum)

    # ---------------------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.precision == "amp_bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _checkpoint_state(self, step: int) -> Dict[str, Any]:
        return {"format": STATE_FORMAT, "config": self.cfg, "fingerprint": run_fingerprint(self.cfg), "step": step,
                "model": self.recipe.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(self.device),
                "world_size": self.dist.world_size,
                **({"extra": self.recipe.extra_state()} if hasattr(self.recipe, "extra_state") else {}),
                **({"validation_window": list(self._window)} if self.validation else {})}

    def _save(self, step: int) -> None:
        if self.dist.is_main:
            folder = self.out_dir / "checkpoints"
            folder.mkdir(parents=True, exist_ok=True)
            state = self._checkpoint_state(step)
            atomic_write(folder / f"step-{step:08d}.pt", lambda tmp: torch.save(state, tmp))
            for old in sorted(folder.glob("step-*.pt"))[:-self.keep_checkpoints]:
                old.unlink()
        barrier(self.dist)

    def _resume(self, path: Path) -> int:
        state = read_state_dict(str(path), raw=True)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UtabenchError(f"{path} is not a utabench training checkpoint (no `{STATE_FORMAT}` state)")
        changed = differences(state["config"], self.cfg)
        if changed:
            raise UtabenchError(f"cannot resume from {path}: it was written by another configuration (differs in "
                                f"{', '.join(changed[:6])}); use a new output directory or the original config")
        if state["world_size"] != self.dist.world_size:
            raise UtabenchError(f"cannot resume {path} exactly: it ran on {state['world_size']} processes, this run "
                                f"has {self.dist.world_size}")
        self.recipe.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if hasattr(self.recipe, "load_extra_state"):
            self.recipe.load_extra_state(state["extra"])
        set_rng_state(state["rng"], self.device)
        if self.validation:
            self._window = list(state["validation_window"])
        return int(state["step"])

    def _loader(self, start: int) -> DataLoader:
        sampler = StepSampler(len(self.recipe.dataset), self.global_batch, int(self.cfg["seed"]), start,
                              self.total_steps, self.dist.rank, self.dist.world_size)
        workers = int(self.cfg["workers"])
        # its own generator: starting a loader must not draw from the global RNG that drop path uses
        seeds = torch.Generator().manual_seed(int(self.cfg["seed"]) * 1_000_003 + start)
        micro = self.global_batch // (self.dist.world_size * self.grad_accum)
        return DataLoader(self.recipe.dataset, batch_size=micro, sampler=sampler, num_workers=workers,
                          collate_fn=getattr(self.recipe, "collate", None), pin_memory=self.device.type == "cuda",
                          drop_last=True, persistent_workers=False, prefetch_factor=4 if workers else None,
                          generator=seeds)

    def _validation_loss(self) -> float:
        """The recipe's validation loss on its whole validation set, a mean per item (see the module docstring)."""
        data, module = self.recipe.validation_set, self.recipe.module
        workers = int(self.cfg["workers"])
        loader = DataLoader(data, batch_sampler=StridedBatchSampler(len(data), int(self.validation["batch_size"]),
                                                                    self.dist),
                            num_workers=workers, collate_fn=getattr(self.recipe, "collate", None),
                            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(0))
        total, count = 0.0, 0
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad(), self._autocast():
                for batch in loader:
                    loss, items = self.recipe.validation_loss(module, batch, self.device)
                    total, count = total + float(loss) * items, count + items
        finally:
            module.train(was_training)
        if self.dist.enabled:
            sums = torch.tensor([total, count], dtype=torch.float64, device=self.device)
            torch_dist.all_reduce(sums)
            total, count = float(sums[0]), int(sums[1])
        return total / count

    def _validation_point(self, step: int, log_path: Path) -> float:
        """Score the validation set, log the point and start a new training-loss window; returns the seconds taken."""
        began = time.perf_counter()
        loss = self._validation_loss()
        if self.dist.is_main:
            train = self._window[0] / self._window[1] if self._window[1] else None
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "validation_loss": loss, "train_loss": train,
                                    "seconds": round(time.perf_counter() - began, 3)}) + "\n")
        self._window = [0.0, 0]
        return time.perf_counter() - began

    def _optimiser(self, module: nn.Module):
        optim = self.cfg["optim"]
        if hasattr(self.recipe, "build_optimizer"):
            optimizer = self.recipe.build_optimizer(module)
            return optimizer, self.recipe.build_scheduler(optimizer, self.warmup_steps, self.total_steps)
        optimizer = torch.optim.AdamW(param_groups(module, float(optim["weight_decay"])), lr=float(optim["lr"]),
                                      betas=tuple(optim["betas"]), eps=float(optim["eps"]),
                                      fused=fused_adamw(self.device) or None)
        factor = warmup_cosine(self.warmup_steps, self.total_steps, float(optim["lr"]), float(optim["min_lr"]))
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # ---------------------------------------------------------------------------------------------------------
    def run(self, resume_from: Optional[Path] = None) -> Path:
        """Train to the configured step count (continuing from the latest checkpoint) and export; returns the
        exported artifact's metadata file."""
        done = self.out_dir / "final.json"
        module = self.recipe.module.to(self.device).train()
        self.optimizer, self.scheduler = self._optimiser(module)
        resume_from = resume_from or latest_checkpoint(self.out_dir)
        start = self._resume(resume_from) if resume_from else 0
        if start:
            self.log(f"resuming from {resume_from} at step {start}")
        else:
            torch.manual_seed(int(self.cfg["seed"]) + self.dist.rank)
            random.seed(int(self.cfg["seed"]))
        model = module
        if self.dist.world_size > 1:
            model = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._train(model, start)
        barrier(self.dist)
        meta = self.recipe.export(self.out_dir, steps=self.total_steps) if self.dist.is_main else None
        if self.dist.is_main:
            meta.update({"fingerprint": run_fingerprint(self.cfg), "config": self.cfg, "steps": self.total_steps,
                         **setup_record(self.setup())})
            if self.validation:
                meta["validation"] = validation_curve(self.out_dir / "log.jsonl")
            atomic_write_json(done, meta, indent=1)
        barrier(self.dist)
        return done

    def _train(self, model: nn.Module, start: int) -> None:
        clip = self.cfg["optim"].get("clip_grad")
        every = int(self.cfg["checkpoint_every"])
        bar = tqdm(total=self.total_steps, initial=start, disable=not (self.progress and self.dist.is_main),
                   desc=f"train {self.cfg['objective']}", unit="step", dynamic_ncols=True)
        log_path = self.out_dir / "log.jsonl"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            _truncate_log(log_path, start if start else -1)  # a fresh run keeps nothing, a step-0 point neither
        validate_every = int(self.validation["every"]) if self.validation else 0
        if self.validation and start == 0:
            self._validation_point(0, log_path)
        step, seen, clock = start, 0, time.perf_counter()
        batches = iter(self._loader(start))
        for _ in range(start, self.total_steps):
            self.optimizer.zero_grad(set_to_none=True)
            value = 0.0
            for micro in range(self.grad_accum):
                last_micro = micro == self.grad_accum - 1
                no_sync = getattr(model, "no_sync", None) if not last_micro else None  # DDP syncs on the last only
                with no_sync() if no_sync else contextlib.nullcontext():
                    with self._autocast():
                        loss = self.recipe.loss(model, next(batches), self.device) / self.grad_accum
                    if not math.isfinite(float(loss.detach())):
                        last = latest_checkpoint(self.out_dir)
                        raise UtabenchError(f"the loss became {float(loss.detach())} at step {step + 1}; stopped "
                                            f"before updating or saving that step (last checkpoint: {last or 'none'}); "
                                            "lower optim.lr or set optim.clip_grad")
                    loss.backward()
                value += float(loss.detach())
            if clip:
                torch.nn.utils.clip_grad_norm_(self.recipe.module.parameters(), float(clip))
            self.optimizer.step()
            self.scheduler.step()
            step += 1
            if hasattr(self.recipe, "after_step"):
                self.recipe.after_step(step)
            if self.validation:
                self._window = [self._window[0] + value, self._window[1] + 1]
                if step % validate_every == 0 or step == self.total_steps:
                    clock += self._validation_point(step, log_path)  # not training time
            seen += self.global_batch
            rate = seen / max(1e-9, time.perf_counter() - clock)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.0f}")
            if self.dist.is_main and (step % 10 == 0 or step == self.total_steps):
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": step, "loss": value, "lr": self.scheduler.get_last_lr()[0],
                                        "images_per_second": round(rate, 1)}) + "\n")
            if step % every == 0 or step == self.total_steps:
                self._save(step)
        bar.close()
