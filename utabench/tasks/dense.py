"""What detection and segmentation share: fine-tune a registered backbone with a recipe through mmengine, then
evaluate with the framework's metric (or evaluate a fine-tuned checkpoint only), and report the metrics in %.

Dataset-entry keys read here: `recipe` (a name under utabench/configs/dense/ or a .py path; default: the paper's B
or L recipe by the backbone's depth), `eval_only` (a fine-tuned mmengine checkpoint), `iters` (override the
recipe's iteration count, at the paper's batch size), `seed`.

The record's evaluation setup is the recipe's test loader's (not --batch-size / --precision) and its training setup
(stage `training_stage`) the recipe's train batch x processes and its optimiser wrapper's precision; a fine-tuning
resumed from a finished work directory reports the setup its last checkpoint records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from utabench.backbones.factory import backbone_entry
from utabench.core.errors import UtabenchError
from utabench.core.schema import Schema
from utabench.tasks.base import Task, TaskOutput


class DenseOptions(Schema):
    recipe: Optional[str] = Field(None, description="an mmdet / mmseg config: a name under utabench/configs/dense/ "
                                  "or a .py path (default: the paper's B or L recipe by backbone depth)")
    iters: Optional[PositiveInt] = Field(None, description="training iterations at the paper's batch size "
                                         "(default: the recipe's)")
    eval_only: Optional[str] = Field(None, description="a fine-tuned checkpoint (finetuned.pth) to evaluate "
                                     "instead of training")
    seed: NonNegativeInt = Field(0, description="the fine-tuning's random seed")

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, value):
        from utabench.dense.recipe import recipe_path

        recipe_path(value)  # an unknown name fails here, listing the bundled recipes
        return value

    @field_validator("eval_only")
    @classmethod
    def _exists(cls, value):
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"eval_only checkpoint {value} does not exist; pass a fine-tuned mmengine .pth file")
        return value


class DenseTask(Task):
    kind_of_type: Dict[str, str] = {}  # dataset type -> coco / lvis / ade20k
    training_stage: str = ""  # the name of its fine-tuning in the record's training setups
    options = DenseOptions

    def metrics(self, raw: Dict[str, float], kind: str) -> Dict[str, float]:
        raise NotImplementedError

    def check_backbone(self, cfg, backbone) -> None:
        """Refuse, before training, what the recipe's neck cannot use."""

    @staticmethod
    def patch_size(cfg, backbone) -> int:
        """The patch size the dense model runs at: the recipe's conversion target, else the backbone's own."""
        return cfg.model.backbone.get("patch_size") or backbone.info.patch_size

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:
        options = options or self.options_of({})
        from utabench.dense.engine import export_finetuned, train_and_test, training_leftovers
        from utabench.dense.handoff import lend
        from utabench.dense.recipe import (
            default_recipe,
            evaluation_setup,
            fill_recipe,
            load_recipe,
            training_setup,
            use_cpu_processes,
            without_amp,
        )

        if ctx.work_dir is None:
            raise UtabenchError(f"task {self.name} trains: it needs a work directory (run it through the runner)")
        kind = self.kind_of_type[data.type]
        recipe = str(options.get("recipe") or default_recipe(kind, backbone.info.depth))
        cfg = load_recipe(recipe)
        finetuned = options.get("eval_only")
        with lend(backbone) as token:  # the dense model takes the built backbone instead of building it again
            schedule = fill_recipe(cfg, recipe, kind, {**backbone_entry(backbone), "lent": token}, data, options,
                                   backbone.normalisation(), ctx.work_dir, ctx.dist.world_size, ctx.workers)
            if ctx.device_type == "cpu":
                schedule["amp"] = "off (CPU)" if without_amp(cfg) else "off"
                if ctx.dist.enabled:
                    use_cpu_processes(cfg)
            self.check_backbone(cfg, backbone)
            evaluation = evaluation_setup(cfg, ctx.device_type, ctx.dist.world_size)
            setup = None if finetuned else training_setup(cfg, ctx.device_type, ctx.dist.world_size)
            raw, train_seconds, test_seconds, trained = train_and_test(cfg, finetuned=finetuned, setup=setup)
        discard = []
        if not finetuned and ctx.dist.is_main:
            # what --eval-only needs is the fine-tuned weights; the resumable training state goes with the record
            finetuned, discard = export_finetuned(ctx.work_dir), training_leftovers(ctx.work_dir)
        details = {"recipe": recipe, "schedule": schedule if not options.get("eval_only") else None,
                   "finetuned_checkpoint": str(finetuned) if finetuned else "", "work_dir": str(ctx.work_dir),
                   "num_classes": len(data.classes), "raw_metrics": raw}
        return TaskOutput(metrics=self.metrics(raw, kind), num_images=data.num_val_images, model_seconds=test_seconds,
                          train_seconds=train_seconds, details=details, discard=discard, evaluation=evaluation,
                          training={self.training_stage: trained} if trained else {})
