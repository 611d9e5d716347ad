"""Frozen-encoder LLaVA (Table 3): train LLaVA's two stages on the backbone's features (or take a stage-2 folder),
answer LLaVA-Bench, have the judge review the answers, and report the relative scores (%) per category.

Under torchrun the stages train with DDP over all processes; the answers and reviews are made on rank 0.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Dict, Optional

from pydantic import model_validator

from utabench.core.distributed import barrier
from utabench.core.errors import UtabenchError
from utabench.core.registry import TASKS
from utabench.core.schema import Schema
from utabench.tasks.base import Task, TaskOutput

METRICS = {"conversation": "conversation", "detail": "detail", "complex": "complex", "overall": "overall",
           "parse_failures": "overall_parse_failures"}


class StageData(Schema):
    data: str  # LLaVA's json (blip_laion_cc_sbu_558k.json, llava_instruct_150k.json)
    images: str  # its image folder


class LlavaOptions(Schema):
    llm: Optional[str] = None  # a local transformers causal LM (Vicuna, LLaMA, ...)
    stage1: Optional[StageData] = None
    stage2: Optional[StageData] = None
    projector: Optional[str] = None  # a trained stage-1 mm_projector.bin (ours or LLaVA's): skips stage 1
    eval_only: Optional[str] = None  # a stage-2 folder (ours or LLaVA's): evaluates only
    recipe: str = "paper"  # utabench/configs/llava/<name>.yaml or a path
    overrides: Optional[Dict[str, Any]] = None  # recipe keys to change, e.g. {projector: mlp2x_gelu}
    judge: Optional[Dict[str, Any]] = None  # {type: offline} or {type: openai, model, base_url, api_key_env}

    @model_validator(mode="after")
    def _recipe_and_judge(self):
        from utabench.llava.judge import make_judge
        from utabench.llava.pipeline import load_recipe

        load_recipe(self.recipe, self.overrides)  # a bad recipe or override fails before any model is built
        make_judge(self.judge)
        return self


@TASKS.register("llava-bench", help="frozen-encoder LLaVA (Table 3): two-stage training, LLaVA-Bench with a judge")
class LlavaBench(Task):
    name = "llava-bench"
    dataset_types = ("llava-bench", "llava-bench-coco")
    options = LlavaOptions

    def run(self, backbone, data, ctx) -> TaskOutput:
        from utabench.llava.bench import (
            generate_answers,
            read_complete_lines,
            review_answers,
        )
        from utabench.llava.judge import make_judge, summarize
        from utabench.llava.model import llm_dtype
        from utabench.llava.pipeline import (
            load_finetuned,
            load_recipe,
            stage_config,
            train_stage,
            weights_fingerprint,
        )

        if ctx.work_dir is None:
            raise UtabenchError(f"task {self.name} trains: it needs a work directory (run it through the runner)")
        opts, work = data.options, ctx.work_dir
        recipe = load_recipe(str(opts.get("recipe", "paper")), opts.get("overrides"))
        judge = make_judge(opts.get("judge"))
        log = print if ctx.dist.is_main else (lambda _: None)
        stages = {}
        trained = time.perf_counter()
        folder = opts.get("eval_only")
        if not folder:
            init = opts.get("projector")
            if not init:
                cfg = stage_config(recipe, 1, opts.get("stage1"), backbone, opts["llm"], None)
                stages["stage1"] = str(train_stage(cfg, backbone, work / "stage1", ctx, log))
                init = str(work / "stage1" / "mm_projector.bin")
            cfg = stage_config(recipe, 2, opts.get("stage2"), backbone, opts["llm"], str(init))
            folder = stages["stage2"] = str(train_stage(cfg, backbone, work / "stage2", ctx, log))
        train_seconds = time.perf_counter() - trained
        generation = recipe["generation"]
        key = hashlib.sha256(f"{weights_fingerprint(folder)}{generation}{backbone.info.weights_sha256}"
                             .encode()).hexdigest()[:12]
        answers_path, reviews_path = work / f"answers-{key}.jsonl", work / f"reviews-{key}-{judge.name}.jsonl"
        start = time.perf_counter()
        if ctx.dist.is_main:
            hosted = load_finetuned(backbone, folder, llm_dtype(recipe["llm_dtype"], ctx.device))
            hosted.model.to(ctx.device)
            answers = generate_answers(hosted, data.bench, answers_path, f"{backbone.spec.key}-llava", ctx.device,
                                       ctx.autocast, int(generation["max_new_tokens"]),
                                       float(generation.get("temperature", 0.0)))
            review_answers(data.bench, answers, judge, reviews_path)
        barrier(ctx.dist)
        seconds = time.perf_counter() - start
        reviews = list(read_complete_lines(reviews_path, "question_id").values())  # every rank reads; rank 0 wrote
        scores = summarize(reviews)
        metrics = {ours: scores.get(theirs, 0) for ours, theirs in METRICS.items()}
        details = {"variant": data.bench.variant, "judge": judge.name, "judge_comparable_to_paper": judge.comparable,
                   "judge_note": judge.note, "scores": scores, "recipe": recipe["source"], "stages": stages,
                   "model": str(folder), "answers": str(answers_path), "reviews": str(reviews_path)}
        # the stages' resumable states (a whole LLM each for stage 2) are not needed once the record is written
        discard = [Path(stage) / "checkpoints" for stage in stages.values()]
        return TaskOutput(metrics=metrics, num_images=data.num_questions, model_seconds=seconds,
                          train_seconds=train_seconds, details=details, discard=discard)
