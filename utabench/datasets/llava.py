"""LLaVA-Bench (In-the-Wild) as a dataset entry, with what training LLaVA on it needs.

    {type: llava-bench, root: DIR,                       # questions.jsonl, context.jsonl, answers_gpt4.jsonl, images/
     llm: DIR,                                           # a local transformers causal LM (Vicuna, LLaMA, ...)
     stage1: {data: blip_laion_cc_sbu_558k.json, images: DIR},   # LLaVA-Pretrain
     stage2: {data: llava_instruct_150k.json, images: DIR},      # LLaVA-Instruct (COCO train2017 images)
     recipe: paper,                                      # utabench/configs/llava/<name>.yaml or a path
     overrides: {...},                                   # recipe keys to change, e.g. {projector: mlp2x_gelu}
     projector: mm_projector.bin,                        # optional: a trained stage 1 (ours or LLaVA's); skips it
     eval_only: DIR,                                     # optional: a stage-2 folder (ours or LLaVA's); evaluates only
     rule: rule.json,                                    # default ROOT/rule.json
     judge: {type: offline} | {type: openai, model: gpt-4-0314, base_url: URL, api_key_env: OPENAI_API_KEY}}

Loading checks the bench files, the judge settings and that the LLM and data paths exist, before any model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

from utabench.datasets.images import fingerprint_files
from utabench.harness.errors import UtabenchError
from utabench.harness.registry import DATASETS
from utabench.llava.bench import BenchFiles, read_bench
from utabench.llava.judge import make_judge


@dataclass
class LlavaBenchSet:
    name: str
    type: str
    root: Path
    bench: BenchFiles
    fingerprint: str
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_questions(self) -> int:
        return len(self.bench.questions)


def _exists(value, what: str, hint: str) -> None:
    if not value or not Path(str(value)).expanduser().exists():
        raise UtabenchError(f"{what} {value} does not exist; {hint}")


@DATASETS.register("llava-bench", help="LLaVA-Bench (In-the-Wild): questions, context, reference answers, rule, images")
def load_llava_bench(cfg: Dict[str, Any]) -> LlavaBenchSet:
    bench = read_bench(cfg.get("root") or "", cfg.get("rule"))
    make_judge(cfg.get("judge"))  # bad judge settings fail before training
    if cfg.get("eval_only"):
        _exists(cfg["eval_only"], "LLaVA checkpoint", "expected a stage-2 output folder (config.json + weights)")
    else:
        _exists(cfg.get("llm"), "LLM path", "set the dataset's `llm` to a local transformers model directory "
                                           "(config.json, weights, tokenizer), e.g. vicuna-7b-v1.5")
        stages = ("stage2",) if cfg.get("projector") else ("stage1", "stage2")
        for stage in stages:
            entry = cfg.get(stage) or {}
            if not isinstance(entry, dict):
                raise UtabenchError(f"the dataset's `{stage}` must be {{data: FILE.json, images: DIR}}")
            _exists(entry.get("data"), f"{stage} data", f"set `{stage}: {{data: FILE.json, images: DIR}}`")
            _exists(entry.get("images"), f"{stage} image folder", f"set `{stage}: {{data: FILE.json, images: DIR}}`")
    files = [bench.root / name for name in ("questions.jsonl", "context.jsonl", "answers_gpt4.jsonl")]
    options = {k: v for k, v in cfg.items() if k not in ("name", "type", "root")}
    return LlavaBenchSet(name=cfg.get("name", "llava-bench"), type="llava-bench", root=bench.root, bench=bench,
                         fingerprint=fingerprint_files(bench.root, files), options=options)
