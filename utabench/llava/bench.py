"""LLaVA-Bench (either variant, read by `datasets/llava.py`): generate the model's answers, have a judge review them
against the reference answers, and score.

Answers (`answers.jsonl`, as LLaVA's `model_vqa.py` writes them) and reviews (`reviews.jsonl`) are appended and
flushed one line at a time, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write_text
from utabench.datasets.llava import BenchFiles
from utabench.llava.conversation import encode
from utabench.llava.data import open_image
from utabench.llava.judge import parse_score, review_prompt


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
