"""LLaVA-Bench as a dataset entry, in both official variants, read from their files.

In-the-Wild (ROOT = LLaVA-Bench In-the-Wild): `questions.jsonl` ({question_id, image, text, category:
conv|detail|complex}), `context.jsonl` ({image, caption}: what the judge is told), `answers_gpt4.jsonl` (reference
answers by question_id), `rule.json` (the judge's role and prompt per `llava_bench_<category>`) and `images/`.
Reviewed as upstream's `eval_gpt_review_bench.py` does (review category `llava_bench_<category>`).

COCO (the 90 questions on 30 COCO val2014 images LLaVA v1 was developed on; the UTA paper's Table 3): the files as
LLaVA's repository publishes them, gathered in ROOT: `qa90_questions.jsonl` and `qa90_gpt4_answer.jsonl`
(playground/data/coco2014_val_qa_eval/), `caps_boxes_coco2014_val_80.jsonl` and `rule.json` (llava/eval/table/), and
the val2014 images in ROOT/val2014 (named `COCO_val2014_000000441147.jpg` or `000000441147.jpg`). The judge's context
is the five captions and then one `category: [x1, y1, x2, y2]` line per box, as upstream's
`eval_gpt_review_visual.py` builds it (review category and rule key: the bare category).

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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from pydantic import Field

from utabench.core.errors import UtabenchError
from utabench.core.io import read_jsonl
from utabench.core.registry import DATASETS
from utabench.core.schema import Schema
from utabench.datasets.images import dataset_root

CATEGORIES = ("conv", "detail", "complex")
# the system prompt of LLaVA v1's `vicuna_v1` conversations (its training data and model_vqa.py answers)
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the user's questions.")


@dataclass
class BenchFiles:
    root: Path
    variant: str  # in-the-wild | coco
    questions: List[Dict[str, Any]]
    captions: Dict[str, str]  # image -> context for the judge
    references: Dict[Any, Dict[str, Any]]  # question_id -> reference answer
    rules: Dict[str, Dict[str, str]]
    images: Dict[Any, Path]  # question_id -> image file
    category_prefix: str  # the review category and rule key of a question are prefix + its category

    @property
    def files(self) -> List[Path]:
        """What the scores depend on, for the dataset fingerprint."""
        return sorted(set(self.images.values()))


def _questions(path: Path, find_image: Callable[[str], Optional[Path]]):
    questions, images = read_jsonl(path, "LLaVA-Bench questions"), {}
    for number, q in enumerate(questions, 1):
        missing = [k for k in ("question_id", "image", "text", "category") if k not in q]
        if missing or q["category"] not in CATEGORIES:
            raise UtabenchError(f"{path}:{number}: needs question_id, image, text and a category in "
                                f"{', '.join(CATEGORIES)} (missing {', '.join(missing) or 'nothing'}, category "
                                f"{q.get('category')!r})")
        image = find_image(q["image"])
        if image is None:
            raise UtabenchError(f"{path}:{number}: image {q['image']} not found")
        images[q["question_id"]] = image
    return questions, images


def _references(path: Path, questions) -> Dict[Any, Dict[str, Any]]:
    references = {a["question_id"]: a for a in read_jsonl(path, "LLaVA-Bench reference answers")
                  if "question_id" in a}
    for q in questions:
        if q["question_id"] not in references:
            raise UtabenchError(f"{path} has no reference answer for question {q['question_id']}")
    return references


def _rules(path: Path, keys) -> Dict[str, Dict[str, str]]:
    try:
        rules = json.loads(path.read_text())
    except FileNotFoundError:
        raise UtabenchError(f"rule file {path} not found; set the dataset's `rule` to LLaVA's "
                            "llava/eval/table/rule.json") from None
    except json.JSONDecodeError as exc:
        raise UtabenchError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    for key in keys:
        if not isinstance(rules.get(key), dict) or not {"role", "prompt"} <= set(rules[key]):
            raise UtabenchError(f"{path} has no {key} entry with `role` and `prompt`")
    return rules


def read_bench(root: str | Path, rule: str | Path | None = None) -> BenchFiles:
    """LLaVA-Bench (In-the-Wild)."""
    root = dataset_root(root, "questions.jsonl, context.jsonl, answers_gpt4.jsonl, rule.json and images/ "
                       "(LLaVA-Bench In-the-Wild)", "LLaVA-Bench root")

    def find(name: str) -> Optional[Path]:
        return (root / "images" / name) if (root / "images" / name).is_file() else None

    questions, images = _questions(root / "questions.jsonl", find)
    context = read_jsonl(root / "context.jsonl", "LLaVA-Bench context")
    captions = {c["image"]: "\n".join(c["caption"]) if isinstance(c.get("caption"), list) else str(c.get("caption"))
                for c in context if "image" in c}
    for q in questions:
        if q["image"] not in captions:
            raise UtabenchError(f"{root / 'context.jsonl'} has no caption for image {q['image']}")
    references = _references(root / "answers_gpt4.jsonl", questions)
    rules = _rules(Path(rule) if rule else root / "rule.json", {f"llava_bench_{q['category']}" for q in questions})
    return BenchFiles(root, "in-the-wild", questions, captions, references, rules, images, "llava_bench_")


COCO_FILES = {"questions": "qa90_questions.jsonl", "answers": "qa90_gpt4_answer.jsonl",
              "context": "caps_boxes_coco2014_val_80.jsonl", "rule": "rule.json", "images": "val2014"}


def read_bench_coco(root: str | Path, rule: str | Path | None = None, images: str | Path | None = None) -> BenchFiles:
    """LLaVA-Bench (COCO)."""
    layout = (f"{', '.join(v for k, v in COCO_FILES.items() if k != 'images')} and the COCO val2014 images in "
              "val2014/ (LLaVA-Bench COCO, from LLaVA's repository)")
    root = dataset_root(root, layout, "LLaVA-Bench root")
    folder = Path(images).expanduser() if images else root / COCO_FILES["images"]
    if not folder.is_dir():
        raise UtabenchError(f"COCO val2014 image folder {folder} does not exist; expected {layout}")

    def find(name: str) -> Optional[Path]:
        for candidate in (folder / name, folder / f"COCO_val2014_{name}"):
            if candidate.is_file():
                return candidate
        return None

    questions, paths = _questions(root / COCO_FILES["questions"], find)
    context = {c["image"]: c for c in read_jsonl(root / COCO_FILES["context"], "LLaVA-Bench COCO captions and boxes")
               if "image" in c}
    captions = {}
    for q in questions:
        entry = context.get(q["image"])
        if entry is None or not isinstance(entry.get("captions"), list) or not isinstance(entry.get("instances"), list):
            raise UtabenchError(f"{root / COCO_FILES['context']} has no `captions` and `instances` for image "
                                f"{q['image']}")
        boxes = "\n".join(f"{box['category']}: {box['bbox']}" for box in entry["instances"])  # Python's list repr
        captions[q["image"]] = "\n".join(entry["captions"]) + "\n\n" + boxes
    references = _references(root / COCO_FILES["answers"], questions)
    rules = _rules(Path(rule) if rule else root / COCO_FILES["rule"], {q["category"] for q in questions})
    return BenchFiles(root, "coco", questions, captions, references, rules, paths, "")



RULE = Field(None, description="the judge's rules, LLaVA's llava/eval/table/rule.json (default ROOT/rule.json)")


class InTheWildEntry(Schema):
    rule: Optional[str] = RULE


class CocoEntry(Schema):
    rule: Optional[str] = RULE
    images: Optional[str] = Field(None, description="the COCO val2014 images (default ROOT/val2014)")


@dataclass
class LlavaBenchSet:
    name: str
    type: str
    root: Path
    bench: BenchFiles
    files: List[Path]  # the bench's json files and images, for the fingerprint
    extra: bytes = b""
    fingerprint: str = ""  # filled by the runner (core/fingerprint.py)

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
    return LlavaBenchSet(name=cfg.get("name", cfg["type"]), type=cfg["type"], root=bench.root, bench=bench,
                         files=text + bench.files)


@DATASETS.register("llava-bench", help="LLaVA-Bench (In-the-Wild): questions, context, reference answers, rule, images",
                   schema=InTheWildEntry)
def load_llava_bench(cfg: Dict[str, Any]) -> LlavaBenchSet:
    return _bench_set(cfg, read_bench(cfg.get("root") or "", cfg.get("rule")))


@DATASETS.register("llava-bench-coco", help="LLaVA-Bench (COCO, the UTA paper's Table 3): qa90 questions and GPT-4 "
                   "answers, captions and boxes, rule, val2014 images", schema=CocoEntry)
def load_llava_bench_coco(cfg: Dict[str, Any]) -> LlavaBenchSet:
    return _bench_set(cfg, read_bench_coco(cfg.get("root") or "", cfg.get("rule"), cfg.get("images")))
