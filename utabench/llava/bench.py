"""LLaVA-Bench from its official files, both variants: generate the model's answers, have a judge review them against
the reference answers, and score.

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

Answers (`answers.jsonl`, as LLaVA's `model_vqa.py` writes them) and reviews (`reviews.jsonl`) are appended and
flushed one line at a time, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write_text
from utabench.llava.conversation import encode
from utabench.llava.data import open_image, read_jsonl
from utabench.llava.judge import parse_score, review_prompt

CATEGORIES = ("conv", "detail", "complex")


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


def _root(root: str | Path, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UtabenchError(f"LLaVA-Bench root {root} does not exist; expected {layout}")
    return root


def read_bench(root: str | Path, rule: str | Path | None = None) -> BenchFiles:
    """LLaVA-Bench (In-the-Wild)."""
    root = _root(root, "questions.jsonl, context.jsonl, answers_gpt4.jsonl, rule.json and images/ "
                       "(LLaVA-Bench In-the-Wild)")
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
    root = _root(root, layout)
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


def read_complete_lines(path: Path, key: str) -> Dict[Any, Dict[str, Any]]:
    """The rows of a jsonl output that were written whole, by `key` (read only)."""
    rows = {}
    if Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row[key]] = row
    return rows


class JsonlLog:
    """An append-only jsonl output that survives a crash: complete lines are kept, a torn last line is dropped."""

    def __init__(self, path: Path, key: str):
        self.path = Path(path)
        self.done = read_complete_lines(self.path, key)
        if self.path.is_file():  # rewrite without the torn line, so appends start on a fresh line
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in self.done.values()))
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row: Dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


@torch.no_grad()
def generate_answers(hosted, bench: BenchFiles, out: Path, model_id: str, device: str, autocast: Callable,
                     max_new_tokens: int, temperature: float) -> List[Dict[str, Any]]:
    """The model's answer to every question (greedy unless temperature > 0), in LLaVA's answer-file format."""
    log = JsonlLog(out, "question_id")
    model, tokenizer = hosted.model.eval(), hosted.tokenizer
    transform = hosted.encoder.backbone.image_transform()
    for q in bench.questions:
        if q["question_id"] in log.done:
            continue
        turns = [{"from": "human", "value": "<image>\n" + q["text"]}]
        ids = encode("vicuna_v1", turns, tokenizer, hosted.image_token_id, hosted.num_image_tokens,
                     where=f"question {q['question_id']}", generation=True).input_ids
        input_ids = torch.tensor([ids], device=device)
        pixels = transform(open_image(bench.images[q["question_id"]])).unsqueeze(0).to(device)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with autocast():
            output = model.generate(input_ids=input_ids, pixel_values=pixels, attention_mask=torch.ones_like(input_ids),
                                    max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id, **sampling)
        text = tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True).strip()
        row = {"question_id": q["question_id"], "prompt": q["text"], "text": text,
               "answer_id": f"{model_id}-{q['question_id']}", "model_id": model_id, "metadata": {}}
        log.append(row)
        log.done[q["question_id"]] = row
    return [log.done[q["question_id"]] for q in bench.questions]


def review_answers(bench: BenchFiles, answers: List[Dict[str, Any]], judge, out: Path) -> List[Dict[str, Any]]:
    """One upstream-format review per question; unparsable judgements get the tuple [-1, -1]."""
    log = JsonlLog(out, "question_id")
    for idx, (q, answer) in enumerate(zip(bench.questions, answers)):
        if q["question_id"] in log.done:
            continue
        reference = bench.references[q["question_id"]]
        category = bench.category_prefix + q["category"]
        content = review_prompt(bench.captions[q["image"]], q["text"], reference["text"], answer["text"],
                                bench.rules[category])
        text = judge.review(content)
        scores = parse_score(text)
        row = {"id": idx + 1, "question_id": q["question_id"],
               "answer1_id": reference.get("answer_id", reference["question_id"]), "answer2_id": answer["answer_id"],
               "category": category, "content": text, "tuple": list(scores) if scores else [-1, -1]}
        log.append(row)
        log.done[q["question_id"]] = row
    reviews = [log.done[q["question_id"]] for q in bench.questions]
    if all(r["tuple"] == [-1, -1] for r in reviews):
        raise UtabenchError(f"the judge ({judge.name}) gave no parsable score in {len(reviews)} reviews (the first line "
                            f"must be two numbers); see {out}")
    return reviews
