"""torch's CPU thread count for one block of work, restored after it: a training that pins its thread count (the same
bits at any --threads) without changing the caller's."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch


@contextlib.contextmanager
def cpu_threads(threads: Optional[int]):
    """torch's CPU thread count set to `threads` (None: left as it is) for the block, then restored."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
