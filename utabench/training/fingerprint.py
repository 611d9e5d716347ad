"""The run fingerprint: a digest of everything in a training configuration that changes the trained weights. It
names a run's cache directory (a pretrained backbone, a fine-tuned classifier), decides whether a finished run in a
directory is this configuration's, and refuses a resume from another configuration's checkpoint (`differences`
names the keys that differ).

Not to be confused with `core/fingerprint.py`, which fingerprints files and datasets. The value of a configuration's
run fingerprint must never change: cached runs are keyed by it.
"""

from __future__ import annotations

from typing import Any, Dict, List

from utabench.core.fingerprint import json_digest

# what does not change the trained weights (so it may differ on resume), in any trainer's configuration
RUN_ONLY = ("checkpoint_every", "workers", "teacher_cache", "student.grad_checkpointing", "paper.table", "paper.row")


def _flatten(cfg: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


# optional settings added after runs were cached: counted only when a config sets them, so configs without them keep
# their fingerprints (`threads`: CPU reductions depend on it; `student.pos_embed`: the positional-embedding ablation;
# `validation`: its held-out images leave the training set, and its curve is part of the cached run;
# `contrastive.mask`: contrastive fine-tuning on the kept tokens only)
COUNTED_WHEN_SET = ("threads", "student.pos_embed", "validation", "contrastive.mask")


def training_fields(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """What the trained weights depend on, by dotted key (COUNTED_WHEN_SET only when set)."""
    return {k: v for k, v in _flatten(cfg).items()
            if k not in RUN_ONLY and k != "paper" and not (k in COUNTED_WHEN_SET and v is None)}


def run_fingerprint(cfg: Dict[str, Any]) -> str:
    return json_digest(training_fields(cfg))


def differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    """The dotted keys whose values differ between two configurations, in what the trained weights depend on."""
    fa, fb = training_fields(a), training_fields(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
