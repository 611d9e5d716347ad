"""Provenance for result records: code version, library versions, device description, host."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Dict

import torch

LIBRARIES = ("utabench", "torch", "torchvision", "open_clip_torch", "timm", "numpy", "pillow", "clip_benchmark",
             "safetensors", "pydantic", "mmcv", "mmengine", "mmdet", "mmsegmentation", "transformers", "tokenizers",
             "pycocotools", "lvis")


@lru_cache(maxsize=None)
def code_version() -> str:
    """`git describe` of the checkout utabench runs from (with -dirty), else the package version."""
    here = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--tags"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"utabench=={library_versions()['utabench']}"


@lru_cache(maxsize=None)
def library_versions() -> Dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(torch.device(device))} (cuda {torch.version.cuda})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def host() -> str:
    return platform.node()
