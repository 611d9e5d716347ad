"""Shared fixtures: torch threads, a small embedded world, a run context with a private cache."""

from __future__ import annotations

import os

import pytest
import torch

import utabench  # noqa: F401  (installs the torchvision shim before anything imports torchvision)
from utabench.core.context import RunContext
from utabench.harness.plugins import load_all

torch.set_num_threads(2)
load_all()
os.environ.setdefault("OUTDATED_IGNORE", "1")  # wilds (a test's reference) would ask PyPI for newer versions

SMALL_COUNTS = {"val": 4, "v2": 2, "sketch": 2, "a": 2, "r": 2, "objectnet": 2, "flickr30k": 12, "coco": 16,
                "train": 4, "pairs": 40, "det_train": 8, "det_val": 4, "seg_train": 8, "seg_val": 4,
                "llava_pretrain": 16, "llava_instruct": 12, "llava_bench": 2}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from utabench.world import generate_world

    return generate_world(tmp_path_factory.mktemp("world"), seed=0, counts=SMALL_COUNTS)


@pytest.fixture
def ctx(tmp_path):
    return RunContext(device="cpu", batch_size=8, workers=0, cache_dir=tmp_path / "cache", progress=False)


def llava_entry(world, **changes):
    """A llava-bench dataset entry on the world's LLaVA data (world recipe, offline judge)."""
    entry = {"name": "llava-bench", "type": "llava-bench", "root": str(world / "llava" / "bench"),
             "llm": str(world / "llava" / "llm"),
             "stage1": {"data": str(world / "llava" / "pretrain" / "blip_laion_cc_sbu_558k.json"),
                        "images": str(world / "llava" / "pretrain" / "images")},
             "stage2": {"data": str(world / "llava" / "instruct" / "llava_instruct_150k.json"),
                        "images": str(world / "llava" / "instruct" / "images")},
             "recipe": "world", "judge": {"type": "offline"}}
    entry.update(changes)
    return entry
