"""Build the recipe a pretraining config asks for, count its FLOPs, train it, and return the export's metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from utabench.core.distributed import DistInfo
from utabench.pretrain.config import DISTILL_OBJECTIVES
from utabench.pretrain.trainer import Trainer


def build_recipe(cfg: Dict[str, Any], device: str = "cpu", dist: Optional[DistInfo] = None):
    dist = dist or DistInfo()
    if cfg["objective"] in DISTILL_OBJECTIVES:
        from utabench.pretrain.distill import DistillRecipe

        return DistillRecipe(cfg, device)
    from utabench.pretrain.contrastive import ContrastiveRecipe

    return ContrastiveRecipe(cfg, device, dist.rank, dist.world_size)


def pretrain(cfg: Dict[str, Any], out_dir: Path, device: str = "cpu", dist: DistInfo = DistInfo(),
             progress: bool = True, log: Callable[[str], None] = print, resume: Optional[str] = None) -> Dict[str, Any]:
    """Train (or continue, or reuse a finished run in `out_dir`) and return the contents of `final.json`."""
    from utabench.pretrain.config import fingerprint

    done = Path(out_dir) / "final.json"
    if done.is_file():
        meta = json.loads(done.read_text())
        if meta.get("fingerprint") == fingerprint(cfg):
            return meta
    recipe = build_recipe(cfg, device, dist)
    if cfg["objective"] in DISTILL_OBJECTIVES:
        from utabench.pretrain.flops import step_flops

        recipe.flops = step_flops(recipe, batch_size=4, device=device)
        log(f"FLOPs per image and step: student {recipe.flops['student_per_image'] / 1e9:.3f} G, teacher "
            f"{recipe.flops['teacher_per_image'] / 1e9:.3f} G")
    trainer = Trainer(cfg, recipe, Path(out_dir), device=device, dist=dist, progress=progress, log=log)
    return json.loads(trainer.run(Path(resume) if resume else None).read_text())
