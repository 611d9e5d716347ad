"""Backbone entries that name a pretraining config instead of a checkpoint: `{name: uta-student, pretrain:
world-student.yaml, objective: mim}`. The config is trained once into the cache (keyed by its fingerprint, which
covers its data and its teacher's checkpoint) and the entry becomes the exported backbone. Teachers (and the
students that contrastive fine-tuning starts from) inside a pretraining config may themselves be `{pretrain: ...}`
entries, so a teacher, its students and their fine-tuned versions chain.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from utabench.core.configfile import with_world
from utabench.core.context import RunContext
from utabench.core.progress import Progress
from utabench.pretrain.config import build_config, config_path, read_raw
from utabench.training.fingerprint import run_fingerprint


class PretrainedResolver:
    """`world`: the embedded world's directory that `{world}` names; `world_factory` makes it when first needed
    (`utabench pretrain` on its own), else a `{world}` path without a world is an error."""

    def __init__(self, ctx: RunContext, world: Optional[Path], log: Callable[[str], None] = print,
                 world_factory: Optional[Callable[[], Path]] = None, progress: Optional[Progress] = None):
        self.ctx, self.world, self.log, self.world_factory = ctx, world, log, world_factory
        self.progress = progress or Progress(None, log)

    def _world(self) -> Optional[Path]:
        if self.world is None and self.world_factory is not None:
            self.world = self.world_factory()
        return self.world

    def config_for(self, entry: Dict[str, Any], train_teacher: bool = True,
                   cached_only: bool = False) -> Optional[Dict[str, Any]]:
        """The pretraining config an entry names; its teacher (or the student it fine-tunes, `init`), if itself a
        `pretrain:` entry, is trained first (with `train_teacher` False it is only checked, as is everything else;
        with `cached_only`, None when it would have to be trained)."""
        path = config_path(str(entry["pretrain"]))
        raw = with_world(read_raw(path), self._world)
        for key in ("teacher", "init"):
            if isinstance(raw.get(key), dict) and "pretrain" in raw[key]:
                if train_teacher:
                    raw[key] = self.resolve_entry(raw[key], cached_only)
                    if raw[key] is None:
                        return None
                else:
                    self.config_for(raw[key], train_teacher=False)
        return build_config(raw, str(path), entry.get("objective"))

    def check(self, entries: List[Any]) -> None:
        """Read and check every pretraining config the entries name (teachers included), training nothing."""
        for entry in entries:
            if isinstance(entry, dict) and "pretrain" in entry:
                self.config_for(entry, train_teacher=False)

    def resolve_entry(self, entry: Dict[str, Any], cached_only: bool = False) -> Optional[Dict[str, Any]]:
        """The backbone entry that a `pretrain:` entry stands for, training it first if the cache lacks it (with
        `cached_only`: None instead of training it or a teacher it names)."""
        from utabench.pretrain.run import pretrain

        cfg = self.config_for(entry, cached_only=cached_only)
        if cfg is None:
            return None
        out = self.ctx.cache_dir / "pretrain" / f"{cfg['objective'].replace('+', '-')}-{run_fingerprint(cfg)}"
        label = entry.get("name") or entry["pretrain"]
        fresh = not (out / "final.json").is_file()
        if fresh and cached_only:
            return None
        stage = f"pretrain:{label}:{cfg['objective']}"
        if fresh:
            start = self.progress.start(stage, f"[{label}] pretraining {cfg['objective']} ({entry['pretrain']}) into "
                                        f"{out}")
        meta = pretrain(cfg, out, self.ctx.device, self.ctx.dist, progress=self.ctx.progress,
                        log=lambda line: self.log(f"[{label}] {line}"))  # run-all's workers interleave their lines
        if fresh:
            self.progress.done(stage, start)
        resolved = {k: v for k, v in entry.items() if k not in ("pretrain", "objective")}
        resolved.update(meta["backbone"])
        teacher = meta.get("teacher") or {}
        resolved["pretrain"] = {"objective": meta["objective"], "config": str(entry["pretrain"]),
                                "steps": meta.get("steps"), "flops": meta.get("flops"),
                                "teacher": teacher.get("name") or teacher.get("checkpoint"), "paper": cfg.get("paper"),
                                "init": (cfg.get("init") or {}).get("checkpoint"),
                                "setup": meta.get("setup")}  # as the trainer recorded it (none in older caches)
        # A student's config holds its teacher's resolved entry, this info included, so its fingerprint covers it: what
        # is added here must be absent when unset, or every student of a pretrained teacher would be trained again.
        if cfg["student"].get("pos_embed"):
            resolved["pretrain"]["pos_embed"] = cfg["student"]["pos_embed"]  # the positional-embedding ablation's
        if meta.get("validation"):  # the training and validation curves (configs with a `validation` block)
            validation = cfg["validation"]
            mask = f"{validation['mask']['type']} {validation['mask']['ratio']:g}"
            resolved["pretrain"]["validation"] = {"holdout": validation["holdout"], "mask": mask, **meta["validation"]}
        return resolved

    def resolve(self, entries: List[Any]) -> List[Any]:
        out = []
        for entry in entries:
            if isinstance(entry, dict) and "pretrain" in entry and isinstance(entry["pretrain"], str):
                out.append(self.resolve_entry(copy.deepcopy(entry)))
            else:
                out.append(entry)
        return out
