"""Frozen-encoder LLaVA (Table 3): train LLaVA's two stages on the backbone's features (or take a stage-2 folder),
answer LLaVA-Bench, have the judge review the answers, and report the relative scores (%) per category.

Under torchrun the stages train with DDP over all processes; the answers and reviews are made on rank 0. The record
reports each stage it trained (or reused) with the setup the stage recorded (the recipe's batch and precision), and
the evaluation as it ran: one question at a time on rank 0, at the run's precision.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from pydantic import Field, field_validator, model_validator

from utabench.core.context import Setup
from utabench.core.distributed import barrier
from utabench.core.errors import UtabenchError
from utabench.core.registry import TASKS
from utabench.core.schema import Schema
from utabench.core.tablespec import TableSpec, register_table
from utabench.llava.bench import generate_answers, read_complete_lines, review_answers
from utabench.llava.judge import CATEGORY_NAMES, make_judge, summarize
from utabench.llava.model import llm_dtype
from utabench.llava.pipeline import (
    load_finetuned,
    load_recipe,
    stage_config,
    stage_setup,
    train_stage,
    weights_fingerprint,
)
from utabench.tasks.base import Task, TaskOutput
from utabench.tasks.bootstrap import Samples, relative_samples

METRICS = {"conversation": "conversation", "detail": "detail", "complex": "complex", "overall": "overall",
           "parse_failures": "overall_parse_failures"}


class StageData(Schema):
    # LLaVA's json: stage 1 the paper's CC-3M set (LLaVA-CC3M-Pretrain-595K's chat.json, A.1) or LLaVA-1.5's
    # blip_laion_cc_sbu_558k.json (LAION/CC/SBU, same format; the README's and the world's name); stage 2
    # llava_instruct_150k.json
    data: str
    images: str  # its image folder

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value):
        """`DATA.json:IMAGES` (the command line's form) as {data, images}."""
        if isinstance(value, str):
            if ":" not in value:
                raise ValueError(f"{value!r} must be JSON:IMAGES, e.g. blip_laion_cc_sbu_558k.json:images")
            data, images = value.rsplit(":", 1)
            return {"data": data, "images": images}
        return value


def _mapping(value, what: str, bare_key: str = ""):
    """A mapping given as YAML text (the command line's form); a bare word means {bare_key: word}."""
    if not isinstance(value, str):
        return value
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str) and bare_key:
        return {bare_key: parsed}
    if not isinstance(parsed, dict):
        raise ValueError(f"{what} must be a mapping, e.g. '{{projector: mlp2x_gelu}}', got {value!r}")
    return parsed


class LlavaOptions(Schema):
    llm: Optional[str] = Field(None, description="the LLM: a local transformers model directory (e.g. vicuna-7b-v1.5)")
    stage1: Optional[StageData] = Field(None, description="stage-1 caption data and its images, as JSON:IMAGES")
    stage2: Optional[StageData] = Field(None, description="stage-2 instruction data and its images, as JSON:IMAGES")
    projector: Optional[str] = Field(None, description="a trained stage-1 mm_projector.bin (ours or LLaVA's): "
                                     "skips stage 1")
    eval_only: Optional[str] = Field(None, description="a stage-2 LLaVA folder (ours or LLaVA's): answers and "
                                     "scores only")
    recipe: str = Field("paper", description="paper, world or a recipe YAML (default paper)")
    overrides: Optional[Dict[str, Any]] = Field(None, description="recipe keys to change, e.g. "
                                                "'{projector: mlp2x_gelu}'")
    judge: Optional[Dict[str, Any]] = Field(None, description="offline (default), or '{type: openai, model: "
                                            "gpt-4-0314, base_url: URL, api_key_env: OPENAI_API_KEY}'")

    @field_validator("overrides", mode="before")
    @classmethod
    def _overrides(cls, value):
        return _mapping(value, "overrides")

    @field_validator("judge", mode="before")
    @classmethod
    def _judge(cls, value):
        return _mapping(value, "judge", bare_key="type")

    @model_validator(mode="after")
    def _recipe_and_judge(self):

        load_recipe(self.recipe, self.overrides)  # a bad recipe or override fails before any model is built
        make_judge(self.judge)
        return self


@TASKS.register("llava-bench", help="frozen-encoder LLaVA (Table 3): two-stage training, LLaVA-Bench with a judge")
class LlavaBench(Task):
    name = "llava-bench"
    dataset_types = ("llava-bench", "llava-bench-coco")
    options = LlavaOptions

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:

        if ctx.work_dir is None:
            raise UtabenchError(f"task {self.name} trains: it needs a work directory (run it through the runner)")
        opts, work = options or self.options_of({}), ctx.work_dir
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
        samples = review_samples(reviews, [q["question_id"] for q in data.bench.questions])
        details = {"variant": data.bench.variant, "judge": judge.name, "judge_comparable_to_paper": judge.comparable,
                   "judge_note": judge.note, "scores": scores, "recipe": recipe["source"], "stages": stages,
                   "model": str(folder), "answers": str(answers_path), "reviews": str(reviews_path)}
        # the stages' resumable states (a whole LLM each for stage 2) are not needed once the record is written
        discard = [Path(stage) / "checkpoints" for stage in stages.values()]
        setups = {name: stage_setup(Path(folder)) for name, folder in stages.items()}
        training = {name: setup for name, setup in setups.items() if setup}  # none: finished before setups were kept
        evaluation = Setup(1, ctx.precision, ctx.device_type, 1)  # generate_answers: one question at a time, rank 0
        return TaskOutput(metrics=metrics, num_images=data.num_questions, model_seconds=seconds,
                          train_seconds=train_seconds, details=details, discard=discard, evaluation=evaluation,
                          training=training, samples=samples)


def review_samples(reviews: List[Dict[str, Any]], question_ids: List[Any]) -> Optional[Samples]:
    """The judge's reference and model scores of each parsed review, with the metrics it counts in (its category and
    overall), for the relative scores' intervals; None when no review parsed."""
    parsed = [r for r in reviews if list(r["tuple"]) != [-1, -1]]
    if not parsed:
        return None
    position = {qid: i for i, qid in enumerate(question_ids)}
    names = [CATEGORY_NAMES.get(r["category"], r["category"]) for r in parsed]
    members = {metric: [name == metric for name in names] for metric in METRICS if metric in names}
    members["overall"] = [True] * len(parsed)
    return relative_samples([r["tuple"][0] for r in parsed], [r["tuple"][1] for r in parsed], members,
                            [position[r["question_id"]] for r in parsed])


def _first(group, field: str):
    values = group[field].dropna() if field in group else []
    return values.iloc[0] if len(values) else None


def _llava_incomparable(group: Any, ref: Optional[Any]) -> Optional[str]:
    """Table 3 compares only GPT-4-judged LLaVA-Bench runs of the paper's variant (COCO)."""
    reasons = []
    comparable = _first(group, "provenance.task_details.judge_comparable_to_paper")
    if comparable is not None and not bool(comparable):
        reasons.append(f"judged by {_first(group, 'provenance.task_details.judge')}, not GPT-4")
    variant = _first(group, "provenance.task_details.variant") or "in-the-wild"
    if ref is not None and variant != ref.get("variant"):
        reasons.append(f"ran LLaVA-Bench ({variant}) where the paper ran LLaVA-Bench ({ref.get('variant')})")
    return "; ".join(reasons) or None


register_table(TableSpec(
    3, "Table 3: LLaVA-Bench (frozen encoder), relative score (%)", "paper_table3.csv",
    tuple((label, LlavaBench.name, ("llava-bench-coco", "llava-bench"), metric) for label, metric in (
        ("Conversation", "conversation"), ("Detail", "detail"), ("Reasoning", "complex"), ("Overall", "overall"),
        ("Variant", "provenance.task_details.variant"), ("Judge", "provenance.task_details.judge"))),
    incomparable=_llava_incomparable,
))
