"""Run settings shared by every task: device, batch size, loader workers, precision, caches, distributed info."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from utabench.core.distributed import DistInfo
from utabench.core.errors import UtabenchError

PRECISIONS = ("fp32", "amp_bf16", "amp_fp16")


@dataclass
class RunContext:
    device: str = "cpu"
    batch_size: int = 64
    workers: int = 0
    precision: str = "fp32"
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "utabench")
    skip_corrupt: bool = False
    progress: bool = True
    dist: DistInfo = field(default_factory=DistInfo)
    work_dir: Optional[Path] = None  # where a task that trains keeps its checkpoints and logs (set per job)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise UtabenchError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.batch_size < 1:
            raise UtabenchError(f"batch size must be positive, got {self.batch_size}")
        self.cache_dir = Path(self.cache_dir).expanduser()

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "amp_bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)


def resolve_device(name: str, dist: DistInfo) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UtabenchError("device cuda was asked for but torch sees no CUDA device; use --device cpu")
        return f"cuda:{dist.local_rank}"
    return name
