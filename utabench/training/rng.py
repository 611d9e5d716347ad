"""The random-number generators' state a checkpoint saves and a resume restores (torch's, Python's and, on CUDA, the
device's), so that drop path and the like draw after a resume what they would have drawn without the interruption."""

from __future__ import annotations

import random
from typing import Any, Dict

import torch


def rng_state(device: torch.device) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
