"""LLaVA-Bench (In-the-Wild) from its on-disk files: generate the model's answers, have a judge review them against
the reference answers, and score.

Layout (ROOT): `questions.jsonl` ({question_id, image, text, category: conv|detail|complex}), `context.jsonl`
({image, caption}: what the judge is told about each image), `answers_gpt4.jsonl` (reference answers by
question_id), `rule.json` (the judge's role and prompt per `llava_bench_<category>`; the `rule` entry of the
dataset points elsewhere, e.g. LLaVA's `llava/eval/table/rule.json`) and `images/`.

Answers (`answers.jsonl`, as LLaVA's `model_vqa.py` writes them) and reviews (`reviews.jsonl`) are appended and
flushed one line at a time, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from utabench.harness.errors import UtabenchError
from utabench.harness.io import atomic_write_text
from utabench.llava.conversation import encode
from utabench.llava.data import open_image, read_jsonl
from utabench.llava.judge import parse_score, review_prompt

CATEGORIES = ("conv", "detail", "complex")


@dataclass
class BenchFiles:
    root: Path
    questions: List[Dict[str, Any]]
    captions: Dict[str, str]  # image -> context for the judge
    references: Dict[Any, Dict[str, Any]]  # question_id -> reference answer
    rules: Dict[str, Dict[str, str]]


def read_bench(root: str | Path, rule: str | Path | None = None) -> BenchFiles:
    root = Path(root).expanduser()
    layout = "questions.jsonl, context.jsonl, answers_gpt4.jsonl, rule.json and images/ (LLaVA-Bench In-the-Wild)"
    if not root.is_dir():
        raise UtabenchError(f"LLaVA-Bench root {root} does not exist; expected {layout}")
    questions = read_jsonl(root / "questions.jsonl", "LLaVA-Bench questions")
    for number, q in enumerate(questions, 1):
        missing = [k for k in ("question_id", "image", "text", "category") if k not in q]
        if missing or q["category"] not in CATEGORIES:
            raise UtabenchError(f"{root / 'questions.jsonl'}:{number}: needs question_id, image, text and a category "
                                f"in {', '.join(CATEGORIES)} (missing {', '.join(missing) or 'nothing'}, category "
                                f"{q.get('category')!r})")
        if not (root / "images" / q["image"]).is_file():
            raise UtabenchError(f"{root / 'questions.jsonl'}:{number}: image {root / 'images' / q['image']} not found")
    context = read_jsonl(root / "context.jsonl", "LLaVA-Bench context")
    captions = {c["image"]: "\n".join(c["caption"]) if isinstance(c.get("caption"), list) else str(c.get("caption"))
                for c in context if "image" in c}
    references = {a["question_id"]: a for a in read_jsonl(root / "answers_gpt4.jsonl", "LLaVA-Bench answers")}
    for q in questions:
        if q["image"] not in captions:
            raise UtabenchError(f"{root / 'context.jsonl'} has no caption for image {q['image']}")
        if q["question_id"] not in references:
            raise UtabenchError(f"{root / 'answers_gpt4.jsonl'} has no reference answer for question {q['question_id']}")
    rule_path = Path(rule) if rule else root / "rule.json"
    try:
        rules = json.loads(rule_path.read_text())
    except FileNotFoundError:
        raise UtabenchError(f"rule file {rule_path} not found; set the dataset's `rule` to LLaVA's "
                            "llava/eval/table/rule.json") from None
    except json.JSONDecodeError as exc:
        raise UtabenchError(f"{rule_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    for cat in {q["category"] for q in questions}:
        rule_ = rules.get(f"llava_bench_{cat}")
        if not isinstance(rule_, dict) or not {"role", "prompt"} <= set(rule_):
            raise UtabenchError(f"{rule_path} has no llava_bench_{cat} entry with `role` and `prompt`")
    return BenchFiles(root, questions, captions, references, rules)


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
        pixels = transform(open_image(bench.root / "images" / q["image"])).unsqueeze(0).to(device)
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
        category = f"llava_bench_{q['category']}"
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
