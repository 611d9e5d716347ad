"""What a finished training stage records about how it actually ran (its `Setup`: global batch, precision, device
type, processes, accumulation steps) beside its weights, and reading it back: a task that reuses a finished stage
reports the setup the stage was trained with, not the one it would train with now.

The shared trainer writes it into the stage's `final.json`; the dense tasks (mmengine's loop) into each checkpoint's
`meta`. Metadata written before setups were recorded has none (`read_setup` gives None).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from utabench.core.context import Setup

SETUP_KEY = "setup"


def setup_record(setup: Setup) -> Dict[str, Any]:
    """The setup as the metadata holds it (`{"setup": {...}}`, to merge into a stage's metadata)."""
    return {SETUP_KEY: setup.to_dict()}


def read_setup(meta: Optional[Mapping[str, Any]]) -> Optional[Setup]:
    """The setup a stage's metadata records, or None where it records none."""
    value = (meta or {}).get(SETUP_KEY)
    return Setup(**value) if value else None
