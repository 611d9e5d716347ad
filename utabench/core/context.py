"""Run settings shared by every task: device, batch size, loader workers, precision, caches, distributed info.

`precision: auto` and `workers: auto` are resolved here from the device: bf16 autocast and loader workers from the
CPU count on CUDA; fp32 and no worker processes on CPU (so CPU runs and their metrics are as they always were).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from utabench.core.distributed import DistInfo
from utabench.core.errors import UtabenchError

PRECISIONS = ("fp32", "amp_bf16", "amp_fp16")
DECODERS = ("pil", "gpu")
DEFAULT_BATCH_SIZE = 64
# the cap of `workers auto`, as measured on one H100 with bench/zeroshot_throughput.py's synthetic JPEGs: ViT-B/16
# zero-shot through clip_benchmark ran at 848 / 1362 images/s with 8 / 16 loader workers, decoding alone at 1544
MAX_AUTO_WORKERS = 16


def resolve_precision(name: str, device_type: str) -> str:
    """`auto`: bf16 autocast on CUDA (every adapter's bf16 features are checked against fp32 by the CUDA tests), fp32
    elsewhere."""
    if name == "auto":
        return "amp_bf16" if device_type == "cuda" else "fp32"
    return name


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_workers(value, device_type: str, local_world_size: int = 1) -> int:
    """`auto`: on CUDA, the CPUs this process may use shared among the GPU processes of this node, one left for the
    process itself, at most MAX_AUTO_WORKERS; on CPU 0 (decoding in the process that also runs the model)."""
    if value != "auto":
        return int(value)
    if device_type != "cuda":
        return 0
    return max(1, min(MAX_AUTO_WORKERS, available_cpus() // max(1, local_world_size) - 1))


@dataclass
class RunContext:
    device: str = "cpu"
    batch_size: int = DEFAULT_BATCH_SIZE  # per process, of evaluation: training tasks batch as their recipes say
    workers: int = 0
    precision: str = "fp32"
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "utabench")
    skip_corrupt: bool = False
    decode: str = "pil"  # pil: PIL in the loader workers; gpu: nvjpeg on the device (datasets/gpu_decode.py)
    feature_cache: bool = True  # image features of zero-shot and retrieval kept in cache_dir/features
    progress: bool = True
    dist: DistInfo = field(default_factory=DistInfo)
    work_dir: Optional[Path] = None  # where a task that trains keeps its checkpoints and logs (set per job)

    def __post_init__(self):
        """The values come checked from `Settings` (harness/config.py, the one owner of the run settings' defaults
        and checks); what only the resolved device can tell is checked here."""
        if self.decode == "gpu" and self.device_type != "cuda":
            raise UtabenchError(f"--decode gpu decodes JPEGs with nvjpeg on a CUDA device; this run's device is "
                                f"{self.device}; use --decode pil (the default) or --device cuda")
        self.cache_dir = Path(self.cache_dir).expanduser()

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def setup(self) -> Setup:
        """The evaluation setup these settings give (what `--batch-size`, `--precision`, `--device` control)."""
        return Setup(self.batch_size * self.dist.world_size, self.precision, self.device_type, self.dist.world_size)

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "amp_bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)


@dataclass(frozen=True)
class Setup:
    """How one stage of a record's numbers was actually produced (evaluation, or a training stage): the global batch
    (summed over processes and accumulation steps), precision, device type and number of processes."""

    batch_size: int
    precision: str
    device: str
    world_size: int
    grad_accum: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device_type(name: str) -> str:
    """cuda or cpu for a device setting (auto: cuda when torch sees one)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def resolve_device(name: str, dist: DistInfo) -> str:
    """The torch device of this process for a device setting: its local rank's GPU on CUDA."""
    name = resolve_device_type(name)
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UtabenchError("device cuda was asked for but torch sees no CUDA device; use --device cpu")
        return f"cuda:{dist.local_rank}"
    return name
