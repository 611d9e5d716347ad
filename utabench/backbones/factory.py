"""Build a backbone from a spec string (`family:model`) or a YAML entry (a dict)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch

from utabench.backbones.base import Backbone, BackboneSpec
from utabench.core.errors import UtabenchError
from utabench.core.paths import path_component
from utabench.core.registry import BACKBONES
from utabench.core.schema import Schema, check_keys, validated_dict

ENTRY_KEYS = ("name", "spec", "family", "model", "checkpoint", "options")
METADATA_KEYS = ("paper", "pretrain")  # what the backbone is compared with / how utabench trained it: not options


def parse_backbone_spec(entry: Union[str, Dict[str, Any], BackboneSpec], checkpoint: Optional[str] = None,
                        name: Optional[str] = None, where: Optional[str] = None) -> BackboneSpec:
    """`clip:ViT-B-16` or {spec: clip:ViT-B-16, checkpoint: ..., name: ..., <options>} -> BackboneSpec.

    Every key that is not one of ENTRY_KEYS is an option of the family's adapter and is checked against the
    family's options schema: an unknown key or a bad value is refused, naming `where` the entry came from."""
    if isinstance(entry, BackboneSpec):
        return entry
    if isinstance(entry, str):
        entry = {"spec": entry}
    if not isinstance(entry, dict):
        raise UtabenchError(f"a backbone entry must be a 'family:model' string or a mapping, got {entry!r}")
    entry = dict(entry)
    where = where or f"backbone {entry.get('name') or entry.get('spec') or entry}"
    if isinstance(entry.get("pretrain"), str):
        raise UtabenchError(f"{where}: names a pretraining config ({entry['pretrain']}); run it through run-all, which "
                            "trains it first, or build it with `utabench pretrain`")
    for key in METADATA_KEYS:
        entry.pop(key, None)
    spec = entry.pop("spec", None)
    if spec is not None:
        if not isinstance(spec, str) or ":" not in spec:
            raise UtabenchError(f"{where}: spec {spec!r} is not of the form family:model (e.g. clip:ViT-B-16)")
        family, model = spec.split(":", 1)
    else:
        family, model = entry.pop("family", None), entry.pop("model", None)
        if not family or not model:
            raise UtabenchError(f"{where}: needs `spec: family:model` (or `family` and `model`), got {entry!r}")
    schema = BACKBONES.schema(family) or Schema  # an unknown family is refused here, naming the known ones
    check_keys(entry, ENTRY_KEYS + tuple(schema.keys()), where)
    options = dict(entry.pop("options", None) or {})
    ckpt = checkpoint or entry.pop("checkpoint", None)
    entry.pop("checkpoint", None)
    key = name or entry.pop("name", None)
    entry.pop("name", None)
    options.update(entry)  # every other key of a YAML entry is an adapter option
    options = validated_dict(schema, options, where)
    if ckpt is not None and not isinstance(ckpt, str):
        raise UtabenchError(f"{where}: checkpoint must be a file path, got {ckpt!r}")
    BACKBONES.check(family, model)  # an unknown model is refused now, before any folder or model is made
    spec = BackboneSpec(family=family, model=model, checkpoint=ckpt, name=key, options=options)
    path_component(spec.key, f"{where}: name")
    return spec


def check_entry(entry: Any, where: str) -> Any:
    """A backbone entry with its options validated against its family's schema (the `paper` and `pretrain`
    metadata keys pass through unchanged); refuses an unknown key or a bad value, naming `where`."""
    if not isinstance(entry, dict):
        parse_backbone_spec(entry, where=where)
        return entry
    entry = dict(entry)
    metadata = {k: entry.pop(k) for k in METADATA_KEYS if k in entry}
    spec = parse_backbone_spec(entry, where=where)
    entry = {k: v for k, v in entry.items() if k in ENTRY_KEYS}
    entry.update(spec.options)
    entry.update(metadata)
    return entry


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
