"""Build the recipe a pretraining config asks for, count its FLOPs, train it, and return the export's metadata.

A recipe (what is trained, on which data, with which loss, and its export) registers in `RECIPES` under the name an
objective's `recipe` gives: `distill` (UTA, MIM, FD, UTA+MIM from a frozen teacher), `contrastive` (CLIP) and
`contrastive-ft` (a student's contrastive fine-tuning) and `text-distill` (text UTA).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from utabench.core.distributed import DistInfo
from utabench.core.threads import cpu_threads
from utabench.pretrain import contrastive, contrastive_ft, distill, text_distill  # noqa: F401  (their recipes)
from utabench.pretrain.flops import step_flops
from utabench.pretrain.objectives import OBJECTIVES
from utabench.pretrain.recipes import RECIPES
from utabench.training.trainer import Trainer, finished_run


def build_recipe(cfg: Dict[str, Any], device: str = "cpu", dist: Optional[DistInfo] = None):
    return RECIPES.get(OBJECTIVES.get(cfg["objective"]).recipe)(cfg, device, dist or DistInfo())


def pretrain(cfg: Dict[str, Any], out_dir: Path, device: str = "cpu", dist: DistInfo = DistInfo(),
             progress: bool = True, log: Callable[[str], None] = print, resume: Optional[str] = None) -> Dict[str, Any]:
    """Train (or continue, or reuse a finished run in `out_dir`) and return the contents of `final.json`."""
    meta = finished_run(Path(out_dir), cfg)
    if meta is not None:
        return meta
    recipe = build_recipe(cfg, device, dist)
    if getattr(recipe, "teacher", None) is not None:  # distillation: the student's cost beside the teacher's

        recipe.flops = step_flops(recipe, batch_size=4, device=device)
        log(f"FLOPs per image and step: student {recipe.flops['student_per_image'] / 1e9:.3f} G, teacher "
            f"{recipe.flops['teacher_per_image'] / 1e9:.3f} G")
    if cfg["teacher_cache"]:  # after the FLOP count, which must see the teacher run
        recipe.use_teacher_cache(Path(out_dir).parent / "teacher-tokens")
    trainer = Trainer(cfg, recipe, Path(out_dir), device=device, dist=dist, progress=progress, log=log)
    with cpu_threads(cfg.get("threads")):
        return json.loads(trainer.run(Path(resume) if resume else None).read_text())
