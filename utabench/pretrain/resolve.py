"""Backbone entries that name a pretraining config instead of a checkpoint: `{name: uta-student, pretrain:
world-student.yaml, objective: mim}`. The config is trained once into the cache (keyed by its fingerprint, which
covers its data and its teacher's checkpoint) and the entry becomes the exported backbone. Teachers inside a
pretraining config may themselves be `{pretrain: ...}` entries, so a teacher and its students chain.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from utabench.harness.config import bundled_config, map_strings, read_yaml_mapping
from utabench.harness.context import RunContext
from utabench.harness.errors import UtabenchError
from utabench.pretrain.config import build_config, fingerprint


def _with_world(value: Any, world: Optional[Path]) -> Any:
    def substitute(text: str) -> str:
        if "{world}" in text and world is None:
            raise UtabenchError(f"{text!r} refers to {{world}} but this config generates no world (add `world:`)")
        return text.replace("{world}", str(world)) if "{world}" in text else text
    return map_strings(value, substitute)


def _config_path(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    bundled = bundled_config(f"pretrain/{name}")
    if bundled.is_file():
        return bundled
    raise UtabenchError(f"pretraining config {name!r} is neither a file nor one of utabench/configs/pretrain/")


class PretrainedResolver:
    def __init__(self, ctx: RunContext, world: Optional[Path], log: Callable[[str], None] = print):
        self.ctx, self.world, self.log = ctx, world, log

    def config_for(self, entry: Dict[str, Any]) -> Dict[str, Any]:
        path = _config_path(str(entry["pretrain"]))
        raw = _with_world(read_yaml_mapping(path, "pretraining config", "see utabench/configs/pretrain/"), self.world)
        if isinstance(raw.get("teacher"), dict) and "pretrain" in raw["teacher"]:
            raw["teacher"] = self.resolve_entry(raw["teacher"])
        return build_config(raw, str(path), entry.get("objective"))

    def resolve_entry(self, entry: Dict[str, Any]) -> Dict[str, Any]:
        """The backbone entry that a `pretrain:` entry stands for, training it first if the cache lacks it."""
        from utabench.pretrain.run import pretrain

        cfg = self.config_for(entry)
        out = self.ctx.cache_dir / "pretrain" / f"{cfg['objective'].replace('+', '-')}-{fingerprint(cfg)}"
        label = entry.get("name") or entry["pretrain"]
        if not (out / "final.json").is_file():
            self.log(f"[{label}] pretraining {cfg['objective']} ({entry['pretrain']}) into {out}")
        meta = pretrain(cfg, out, self.ctx.device, self.ctx.dist, progress=self.ctx.progress, log=self.log)
        resolved = {k: v for k, v in entry.items() if k not in ("pretrain", "objective")}
        resolved.update(meta["backbone"])
        teacher = meta.get("teacher") or {}
        resolved["pretrain"] = {"objective": meta["objective"], "config": str(entry["pretrain"]),
                                "steps": meta.get("steps"), "flops": meta.get("flops"),
                                "teacher": teacher.get("name") or teacher.get("checkpoint")}
        return resolved

    def resolve(self, entries: List[Any]) -> List[Any]:
        out = []
        for entry in entries:
            if isinstance(entry, dict) and "pretrain" in entry and isinstance(entry["pretrain"], str):
                out.append(self.resolve_entry(copy.deepcopy(entry)))
            else:
                out.append(entry)
        return out
