"""The frozen teacher's tokens kept on disk per epoch, so that distillation runs which differ only in what the
student does with them (Table 6's objectives, Table 8's masks) run the teacher once.

Crops and flips are functions of (seed, epoch, index) drawn before the mask (see `data.py`), so every objective and
mask over the same data, seed and batch layout shows the teacher the same micro-batches. The first run writes each
epoch it computed in full (`epoch-EEEEE-rank-R.safetensors`, atomically); later runs read them instead of running the
teacher, and get the same bits. The directory's key covers everything the tokens depend on: the teacher entry and
its checkpoint file (path, size, time), the data section and the image files, the seed, the student's and teacher's
input sizes, the batch layout (global batch, processes, accumulation), precision, device type and torch version.

Opt-in with `teacher_cache: true` in a pretraining config: it stores (1 + patches) x dim values per image per epoch,
which suits small runs such as the embedded world's four students (about 27 MB an epoch), not a billion images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from safetensors.torch import load_file, save_file

from utabench.core.fingerprint import json_digest, stat_fingerprint
from utabench.core.io import atomic_write


def cache_key(cfg: Dict[str, Any], sources: List[str], sizes: Dict[str, int], layout: Dict[str, Any]) -> str:
    """sha256 over what the teacher's tokens depend on; `sources` are the data files, `layout` the batch layout."""
    teacher = cfg["teacher"]
    checkpoint = teacher.get("checkpoint")
    what = {"teacher": teacher, "teacher_file": stat_fingerprint(Path(checkpoint)) if checkpoint else None,
            "data": cfg["data"], "files": stat_fingerprint(*sorted(set(sources))), "seed": cfg["seed"],
            "sizes": sizes, "layout": layout, "torch": torch.__version__, **_holdout(cfg)}
    return json_digest(what)


def _holdout(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A validation holdout renumbers the training images (webdataset shards stay the same files): it keys the
    tokens; without one, keys are as they were."""
    validation = cfg.get("validation")
    return {"holdout": validation["holdout"]} if validation else {}


def sharing_key(cfg: Dict[str, Any]) -> str:
    """For scheduling, before the teacher exists: a checked pretraining config's teacher entry, data, seed, student
    model and batch layout ("" without `teacher_cache`). Runs with equal keys get equal `cache_key`s once their teacher
    is trained (the same files, torch and device), so one of them computes the tokens the others can read."""
    if not cfg.get("teacher_cache"):
        return ""
    optim = cfg["optim"]
    what = {"teacher": cfg["teacher"], "data": cfg["data"], "seed": cfg["seed"], "student": cfg["student"]["model"],
            "layout": [optim["batch_size"], optim["grad_accum"], cfg["precision"]], **_holdout(cfg)}
    return json_digest(what)


class TeacherTokenCache:
    """Reads an epoch's tokens when a finished file exists; otherwise collects what the teacher computes and writes
    the epoch once this rank has seen all of it (`per_epoch` samples). A run resumed mid-epoch writes nothing for
    that epoch."""

    def __init__(self, folder: Path, per_epoch: int, rank: int = 0):
        self.folder, self.per_epoch, self.rank = Path(folder), int(per_epoch), int(rank)
        self._epoch: Optional[int] = None
        self._rows: Optional[torch.Tensor] = None  # sample index -> row of `_tokens`, -1 where absent
        self._tokens: Optional[torch.Tensor] = None
        self._pending: Dict[int, torch.Tensor] = {}

    def _path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:05d}-rank-{self.rank}.safetensors"

    def _load(self, epoch: int) -> None:

        self._epoch, self._rows, self._tokens, self._pending = epoch, None, None, {}
        path = self._path(epoch)
        if path.is_file():
            stored = load_file(str(path))
            index = stored["index"]
            self._rows = torch.full((int(index.max()) + 1,), -1, dtype=torch.long)
            self._rows[index] = torch.arange(len(index))
            self._tokens = stored["tokens"]

    def get(self, epoch: int, index: torch.Tensor) -> Optional[torch.Tensor]:
        """The stored tokens of these samples of `epoch`, in their order, or None when the epoch is not stored."""
        if epoch != self._epoch:
            self._load(epoch)
        if self._rows is None or int(index.max()) >= len(self._rows):
            return None
        rows = self._rows[index]
        return None if bool((rows < 0).any()) else self._tokens[rows]

    def put(self, epoch: int, index: torch.Tensor, tokens: torch.Tensor) -> None:
        """Keep freshly computed tokens; the epoch's file is written when this rank has all of it."""
        if epoch != self._epoch:
            self._load(epoch)
        if self._tokens is not None:
            return
        for i, row in zip(index.tolist(), tokens.detach().cpu()):
            self._pending[i] = row
        if len(self._pending) >= self.per_epoch:

            order = sorted(self._pending)
            stored = {"index": torch.tensor(order, dtype=torch.long),
                      "tokens": torch.stack([self._pending[i] for i in order]).contiguous()}
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self._path(epoch), lambda tmp: save_file(stored, str(tmp)))
            self._pending = {}
