"""Pretraining configurations (YAML): one file says what is trained, from what, on what data, with which optimiser.

    objective: uta                        # uta | mim | fd | uta+mim (distillation) or clip (image-text contrastive)
    student: {model: B-14, drop_path: 0.1}                 # a `uta` model config (distillation)
    teacher: {spec: "clip:EVA01-g-14", checkpoint: ...}    # any registered backbone with joint-space tokens
    model: ViT-B-16                                        # an open_clip config (objective clip)
    data: {type: imagefolder, root: DIR}  # or {type: webdataset, shards: "dir/{00000..00099}.tar"}; crop
                                          # area `scale` and aspect `ratio` ranges, `hflip`
    mask: {type: block-r, ratio: 0.4, min_block: 16}
    optim: {batch_size: 4096, epochs: 150, lr: 1.5e-3, min_lr: 1.0e-5, warmup_epochs: 1, weight_decay: 0.05}
    precision: auto                       # bf16 autocast on GPU, fp32 on CPU
    checkpoint_every: 1000                # steps
    seed: 0

Unset values take the defaults below (the paper's, section 3 and REFERENCE.md). `steps` / `warmup_steps` in
`optim` override the epoch counts. The fingerprint covers everything that changes the trained weights, so a resume
from another configuration's checkpoint is refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from utabench.harness.config import _expand, read_yaml_mapping
from utabench.harness.errors import UtabenchError

DEFAULTS: Dict[str, Any] = {
    "objective": "uta",
    "student": {"model": "B-14", "drop_path": 0.0, "grad_checkpointing": False},
    "teacher": None,
    "model": None,
    "data": {"type": "imagefolder", "scale": [0.4, 1.0], "ratio": [0.75, 1.3333333], "hflip": True},
    "mask": {"type": "block-r", "ratio": 0.5, "min_block": 16, "min_aspect": 0.3, "reverse_prob": 0.5},
    "optim": {"batch_size": 4096, "epochs": 150, "lr": 1.5e-3, "min_lr": 1.0e-5, "warmup_epochs": 1,
              "weight_decay": 0.05, "betas": [0.9, 0.98], "eps": 1.0e-6, "clip_grad": None},
    "precision": "auto",
    "checkpoint_every": 1000,
    "seed": 0,
    "workers": 4,
}
# what does not change the trained weights (so it may differ on resume)
_RUN_ONLY = ("checkpoint_every", "workers", "student.grad_checkpointing")
DISTILL_OBJECTIVES = ("uta", "mim", "fd", "uta+mim")
OBJECTIVES = DISTILL_OBJECTIVES + ("clip",)


def deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(raw: Dict[str, Any], source: str = "<config>", objective: Optional[str] = None) -> Dict[str, Any]:
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise UtabenchError(f"pretraining config {source}: unknown keys {', '.join(sorted(unknown))}; allowed: "
                            f"{', '.join(DEFAULTS)}")
    cfg = deep_merge(DEFAULTS, _expand(raw, source))
    if objective:
        cfg["objective"] = objective
    if cfg["objective"] not in OBJECTIVES:
        raise UtabenchError(f"unknown pretraining objective {cfg['objective']!r}; choose one of {', '.join(OBJECTIVES)}")
    if cfg["objective"] == "clip":
        if not cfg.get("model"):
            raise UtabenchError(f"pretraining config {source}: objective clip needs `model: <open_clip config>`")
    elif not cfg.get("teacher"):
        raise UtabenchError(f"pretraining config {source}: objective {cfg['objective']} needs a `teacher` backbone "
                            "entry, e.g. {spec: 'clip:EVA01-g-14', checkpoint: PATH}")
    optim = cfg["optim"]
    for key in ("batch_size", "lr"):
        if not isinstance(optim.get(key), (int, float)) or optim[key] <= 0:
            raise UtabenchError(f"pretraining config {source}: optim.{key} must be a positive number")
    return cfg


def load_pretrain_config(path: str, objective: Optional[str] = None) -> Dict[str, Any]:
    raw = read_yaml_mapping(Path(path), "pretraining config", "see utabench/configs/pretrain/")
    return build_config(raw, path, objective)


def _flatten(cfg: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def training_fields(cfg: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in _flatten(cfg).items() if k not in _RUN_ONLY}


def fingerprint(cfg: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(training_fields(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    fa, fb = training_fields(a), training_fields(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
