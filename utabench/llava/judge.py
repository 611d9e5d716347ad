"""LLaVA-Bench judges, the upstream review format, and the scores.

A judge reads one review prompt (context, question, the reference answer as Assistant 1, the model's as
Assistant 2, and the category's rule) and answers with a first line of two scores from 1 to 10. Reviews are
written one JSON line each, as upstream's `eval_gpt_review_bench.py` writes them ({id, question_id, answer1_id,
answer2_id, category: llava_bench_<category>, content, tuple}). The score of a category is
mean(model score) / mean(reference score) x 100, as upstream's `summarize_gpt_review.py` computes it (means rounded
to 3 places first), with one change: a review whose first line does not parse is counted and left out, where
upstream would average it in as -1.

Judges: `openai` (any OpenAI-compatible chat-completions endpoint: `model`, `base_url`, and the key from the
environment variable named by `api_key_env`; retries with exponential backoff; the key is sent in the request
header only, never logged or written) and `offline` (word-overlap F1 with the reference answer, for the tests and
the embedded default; its records say it is not GPT-4 and not comparable to published numbers).
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from utabench.core.errors import UtabenchError
from utabench.core.registry import Registry
from utabench.core.schema import Schema, validated_dict

SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
CATEGORY_NAMES = {"llava_bench_conv": "conversation", "llava_bench_detail": "detail",
                  "llava_bench_complex": "complex", "conv": "conversation", "detail": "detail", "complex": "complex",
                  "all": "overall"}  # In-the-Wild's review categories, then COCO's


def review_prompt(caption: str, question: str, reference: str, answer: str, rule: Dict[str, str]) -> str:
    role, prompt = rule["role"], rule["prompt"]
    return (f"[Context]\n{caption}\n\n[Question]\n{question}\n\n"
            f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
            f"[System]\n{prompt}\n\n")


def parse_score(review: str) -> Optional[Tuple[float, float]]:
    """The two scores on the review's first line (separated by a space or a comma), or None."""
    parts = review.split("\n")[0].replace(",", " ").split(" ")
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


class OfflineJudge:
    """Scores an answer 1 + 9 x F1 of its words against the reference answer's (the reference scores 10)."""

    name = "offline-word-f1"
    comparable = False
    note = "offline word-overlap judge: not GPT-4, not comparable to published LLaVA-Bench numbers"

    @staticmethod
    def _words(text: str) -> List[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def review(self, content: str) -> str:
        reference = content.split("[Assistant 1]\n", 1)[1].split("\n\n[End of Assistant 1]", 1)[0]
        answer = content.split("[Assistant 2]\n", 1)[1].split("\n\n[End of Assistant 2]", 1)[0]
        ref, ans = self._words(reference), self._words(answer)
        common = sum(min(ref.count(w), ans.count(w)) for w in set(ans))
        f1 = 2 * common / (len(ref) + len(ans)) if common else 0.0
        return f"10 {1 + 9 * f1:.2f}\nWord-overlap F1 with Assistant 1's answer is {f1:.3f}. ({self.note})"


class OpenAIJudge:
    """Any OpenAI-compatible chat-completions endpoint (GPT-4 as in LLaVA's evaluation)."""

    comparable = True
    note = "OpenAI-compatible chat-completions judge"

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY", max_retries: int = 5,
                 backoff: float = 2.0, timeout: float = 120.0, max_tokens: int = 1024, temperature: float = 0.2):
        self.model, self.url = model, base_url.rstrip("/") + "/chat/completions"
        self.name = f"openai:{model}"
        self.max_retries, self.backoff, self.timeout = int(max_retries), float(backoff), float(timeout)
        self.max_tokens, self.temperature = int(max_tokens), float(temperature)
        self._key = os.environ.get(api_key_env)
        if not self._key:
            raise UtabenchError(f"the judge's API key is not set: put it in the environment variable {api_key_env} "
                                "(judge.api_key_env names another)")

    def review(self, content: str) -> str:
        import requests

        body = {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]}
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = requests.post(self.url, json=body, timeout=self.timeout,
                                      headers={"Authorization": f"Bearer {self._key}"})
            except requests.RequestException as exc:
                last = type(exc).__name__
                continue
            if reply.status_code == 429 or reply.status_code >= 500:
                last = f"HTTP {reply.status_code}"
                continue
            if reply.status_code != 200:
                raise UtabenchError(f"the judge endpoint {self.url} refused the request: HTTP {reply.status_code}; "
                                    "check judge.model, judge.base_url and the key")
            try:
                return str(reply.json()["choices"][0]["message"]["content"])
            except (ValueError, KeyError, IndexError, TypeError):
                raise UtabenchError(f"the judge endpoint {self.url} answered without a chat completion "
                                    "(no choices[0].message.content); is judge.base_url an OpenAI-compatible API?") from None
        raise UtabenchError(f"the judge endpoint {self.url} did not answer after {self.max_retries + 1} tries (last: "
                            f"{last}); check that it is up, or rerun later: finished reviews are kept")


class OfflineJudgeConfig(Schema):
    type: Literal["offline"] = "offline"


class OpenAIJudgeConfig(Schema):
    type: Literal["openai"]
    model: Optional[str] = None  # e.g. gpt-4-0314 (LLaVA's judge)
    base_url: Optional[str] = None  # an OpenAI-compatible API, e.g. https://api.openai.com/v1
    api_key_env: str = "OPENAI_API_KEY"
    max_retries: NonNegativeInt = 5
    backoff: NonNegativeFloat = 2.0
    timeout: PositiveFloat = 120.0
    max_tokens: PositiveInt = 1024
    temperature: NonNegativeFloat = 0.2


JUDGES: Registry = Registry("judge type", "judge types")
JUDGES.register("offline", schema=OfflineJudgeConfig)(OfflineJudge)
JUDGES.register("openai", schema=OpenAIJudgeConfig)(OpenAIJudge)


def make_judge(cfg: Optional[Dict[str, Any]]):
    cfg = dict(cfg or {"type": "offline"})
    kind = cfg.get("type", "offline")
    if "api_key" in cfg:
        raise UtabenchError("judge.api_key is not read from configs (they get shared and recorded): put the key in an "
                            "environment variable and name it with judge.api_key_env")
    judge = JUDGES.get(kind)
    settings = validated_dict(JUDGES.schema(kind), cfg, "judge", defaults=True)
    settings.pop("type")
    missing = [k for k in ("model", "base_url") if k in settings and not settings[k]]
    if missing:
        raise UtabenchError(f"the openai judge needs judge.{' and judge.'.join(missing)} "
                            "(e.g. model: gpt-4-0314, base_url: https://api.openai.com/v1)")
    return judge(**settings)


def summarize(reviews: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per category and overall: the relative score (%), the mean reference and model scores (x10, as upstream
    prints them), and how many reviews did not parse (left out)."""
    scores: Dict[str, List[Sequence[float]]] = defaultdict(list)
    failures: Dict[str, int] = defaultdict(int)
    for review in reviews:
        ok = list(review["tuple"]) != [-1, -1]
        for key in (review["category"], "all"):
            if ok:
                scores[key].append(review["tuple"])
            else:
                failures[key] += 1
    out: Dict[str, Any] = {}
    for key in sorted(set(scores) | set(failures)):
        name = CATEGORY_NAMES.get(key, key)
        if scores[key]:
            stats = [round(x, 3) for x in np.asarray(scores[key]).mean(0).tolist()]
            out[name] = round(stats[1] / stats[0] * 100, 1)
            out[f"{name}_reference_x10"] = round(stats[0] * 10, 1)
            out[f"{name}_model_x10"] = round(stats[1] * 10, 1)
        out[f"{name}_parse_failures"] = failures[key]
    return out

