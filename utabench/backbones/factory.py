"""Build a backbone from a spec string (`family:model`) or a YAML entry (a dict)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch

from utabench.backbones.base import Backbone, BackboneSpec
from utabench.harness.errors import UtabenchError
from utabench.harness.registry import BACKBONES

_SPEC_KEYS = {"family", "model", "checkpoint", "name", "spec", "options"}


def parse_backbone_spec(entry: Union[str, Dict[str, Any], BackboneSpec], checkpoint: Optional[str] = None,
                        name: Optional[str] = None) -> BackboneSpec:
    """`clip:ViT-B-16` or {spec: clip:ViT-B-16, checkpoint: ..., name: ..., <options>} -> BackboneSpec."""
    if isinstance(entry, BackboneSpec):
        return entry
    if isinstance(entry, str):
        entry = {"spec": entry}
    if not isinstance(entry, dict):
        raise UtabenchError(f"a backbone entry must be a 'family:model' string or a mapping, got {entry!r}")
    entry = dict(entry)
    spec = entry.pop("spec", None)
    if spec is not None:
        if not isinstance(spec, str) or ":" not in spec:
            raise UtabenchError(f"backbone spec {spec!r} is not of the form family:model (e.g. clip:ViT-B-16)")
        family, model = spec.split(":", 1)
    else:
        family, model = entry.pop("family", None), entry.pop("model", None)
        if not family or not model:
            raise UtabenchError(f"backbone entry {entry!r} needs `spec: family:model` (or `family` and `model`)")
    options = dict(entry.pop("options", {}) or {})
    ckpt = checkpoint or entry.pop("checkpoint", None)
    entry.pop("checkpoint", None)
    key = name or entry.pop("name", None)
    entry.pop("name", None)
    options.update(entry)  # every other key of a YAML entry is an adapter option
    return BackboneSpec(family=family, model=model, checkpoint=ckpt, name=key, options=options)


def backbone_entry(backbone: Backbone) -> Dict[str, Any]:
    """The YAML entry that builds `backbone` again (spec, checkpoint, options; without its result name)."""
    spec = backbone.spec
    entry = {"spec": f"{spec.family}:{spec.model}", **spec.options}
    if spec.checkpoint:
        entry["checkpoint"] = spec.checkpoint
    return entry


def build_backbone(entry, checkpoint: Optional[str] = None, name: Optional[str] = None) -> Backbone:
    spec = parse_backbone_spec(entry, checkpoint, name)
    builder = BACKBONES.get(spec.family)
    seed = int(spec.options.get("seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random-init weights are reproducible
        backbone = builder(spec)
    backbone.spec = spec
    return backbone.eval().requires_grad_(False)
