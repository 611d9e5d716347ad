"""LLaVA-Bench as a dataset entry, in both official variants, with what training LLaVA on it needs.

    {type: llava-bench, root: DIR,                 # In-the-Wild: questions.jsonl, context.jsonl, answers_gpt4.jsonl,
                                                   # rule.json, images/
     rule: rule.json}                              # default ROOT/rule.json
    {type: llava-bench-coco, root: DIR,            # COCO: qa90_questions.jsonl, qa90_gpt4_answer.jsonl,
     images: DIR, rule: rule.json}                 # caps_boxes_coco2014_val_80.jsonl, rule.json; val2014 images
                                                   # (default ROOT/val2014)

plus the task's keys (llm, stage1, stage2, recipe, overrides, projector, eval_only, judge: see
`tasks/llava_bench.py`). Loading checks the bench files and that the LLM and data paths exist, before any model is
built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.core.schema import Schema
from utabench.llava.bench import BenchFiles, read_bench, read_bench_coco


class InTheWildEntry(Schema):
    rule: Optional[str] = None  # LLaVA's llava/eval/table/rule.json (default ROOT/rule.json)


class CocoEntry(Schema):
    rule: Optional[str] = None
    images: Optional[str] = None  # the COCO val2014 images (default ROOT/val2014)


@dataclass
class LlavaBenchSet:
    name: str
    type: str
    root: Path
    bench: BenchFiles
    files: List[Path]  # the bench's json files and images, for the fingerprint
    options: Dict[str, Any] = field(default_factory=dict)
    extra: bytes = b""
    fingerprint: str = ""  # filled by the runner (datasets/fingerprint.py)

    @property
    def num_questions(self) -> int:
        return len(self.bench.questions)


def _exists(value, what: str, hint: str) -> None:
    if not value or not Path(str(value)).expanduser().exists():
        raise UtabenchError(f"{what} {value} does not exist; {hint}")


def _bench_set(cfg: Dict[str, Any], bench: BenchFiles) -> LlavaBenchSet:
    if cfg.get("eval_only"):
        _exists(cfg["eval_only"], "LLaVA checkpoint", "expected a stage-2 output folder (config.json + weights)")
    else:
        _exists(cfg.get("llm"), "LLM path", "set the dataset's `llm` to a local transformers model directory "
                                           "(config.json, weights, tokenizer), e.g. vicuna-7b-v1.5")
        stages = ("stage2",) if cfg.get("projector") else ("stage1", "stage2")
        for stage in stages:
            entry = cfg.get(stage) or {}
            _exists(entry.get("data"), f"{stage} data", f"set `{stage}: {{data: FILE.json, images: DIR}}`")
            _exists(entry.get("images"), f"{stage} image folder", f"set `{stage}: {{data: FILE.json, images: DIR}}`")
    text = [bench.root / name for name in sorted(p.name for p in bench.root.glob("*.jsonl"))]
    options = {k: v for k, v in cfg.items() if k not in ("name", "type", "root")}
    return LlavaBenchSet(name=cfg.get("name", cfg["type"]), type=cfg["type"], root=bench.root, bench=bench,
                         files=text + bench.files, options=options)


@DATASETS.register("llava-bench", help="LLaVA-Bench (In-the-Wild): questions, context, reference answers, rule, images",
                   schema=InTheWildEntry)
def load_llava_bench(cfg: Dict[str, Any]) -> LlavaBenchSet:
    return _bench_set(cfg, read_bench(cfg.get("root") or "", cfg.get("rule")))


@DATASETS.register("llava-bench-coco", help="LLaVA-Bench (COCO, the UTA paper's Table 3): qa90 questions and GPT-4 "
                   "answers, captions and boxes, rule, val2014 images", schema=CocoEntry)
def load_llava_bench_coco(cfg: Dict[str, Any]) -> LlavaBenchSet:
    return _bench_set(cfg, read_bench_coco(cfg.get("root") or "", cfg.get("rule"), cfg.get("images")))
