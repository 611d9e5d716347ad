"""Conversation templates and label masking, as the original LLaVA trains them.

`plain` (stage 1): the image, then the caption and a newline; only the caption and newline are learned.
`vicuna_v1` (stage 2, LLaVA's `v1`): "SYSTEM USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>...";
only the answers and their end-of-sequence token are learned.

The prompt is rendered as text with the character spans of what is learned; the tokenizer's offsets then say which
tokens fall in those spans, so the masks are right for any fast tokenizer (no per-tokenizer length arithmetic,
the source of the original code's silent all-ignored batches). The text is split at `<image>` and each piece
tokenized on its own (as LLaVA does); the image becomes `num_image_tokens` placeholder ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from utabench.core.errors import UtabenchError
from utabench.core.registry import Registry
from utabench.datasets.llava import VICUNA_SYSTEM

IGNORE_INDEX = -100
IMAGE = "<image>"
TEMPLATES: Registry = Registry("conversation template", "conversation templates")


@dataclass
class Encoded:
    input_ids: List[int]
    labels: List[int]


def _pairs(turns: Sequence[Dict[str, str]], where: str) -> List[Tuple[str, str]]:
    turns = list(turns)
    if turns and turns[0].get("from") != "human":
        turns = turns[1:]  # LLaVA skips a leading assistant turn
    if len(turns) < 2 or len(turns) % 2:
        raise UtabenchError(f"{where}: a conversation needs human/gpt turns in pairs, got {len(turns)} turns")
    pairs = []
    for i in range(0, len(turns), 2):
        (a, b) = turns[i], turns[i + 1]
        if a.get("from") != "human" or b.get("from") != "gpt":
            raise UtabenchError(f"{where}: turns {i}, {i + 1} are from {a.get('from')!r}, {b.get('from')!r}; "
                                "expected 'human' then 'gpt'")
        pairs.append((str(a.get("value", "")), str(b.get("value", ""))))
    return pairs


Spans = List[Tuple[int, int]]


@TEMPLATES.register("plain", help="stage 1: the image, then the caption (learned) and a newline")
def plain(pairs: Sequence[Tuple[str, str]], eos: str, generation: bool = False) -> Tuple[str, Spans]:
    text, spans = IMAGE, []
    if not generation:
        spans.append((len(text), len(text) + len(pairs[0][1]) + 1))
        text += pairs[0][1] + "\n"
    return text, spans


@TEMPLATES.register("vicuna_v1", help="stage 2 and answers: LLaVA v1's Vicuna conversation, answers learned")
def vicuna_v1(pairs: Sequence[Tuple[str, str]], eos: str, generation: bool = False) -> Tuple[str, Spans]:
    text, spans = VICUNA_SYSTEM + " ", []
    for i, (question, answer) in enumerate(pairs):
        if i == 0 and IMAGE in question:  # the image leads the first message
            question = IMAGE + "\n" + question.replace(IMAGE, "").strip()
        text += f"USER: {question} ASSISTANT:"
        if generation and i == len(pairs) - 1:
            break
        start = len(text)
        text += " " + answer + eos
        spans.append((start + 1, len(text)))
    return text, spans


def render(template: str, pairs: Sequence[Tuple[str, str]], eos: str, generation: bool = False) -> Tuple[str, Spans]:
    """(text, learned character spans). With `generation`, the last answer is left for the model to write."""
    return TEMPLATES.get(template)(pairs, eos, generation)


def encode(template: str, turns: Sequence[Dict[str, str]], tokenizer, image_token_id: int, num_image_tokens: int,
           where: str = "sample", generation: bool = False, max_length: int = 0) -> Encoded:
    """Token ids and labels (IGNORE_INDEX where nothing is learned) of one conversation with one image."""
    pairs = _pairs(turns, where) if not generation else [(turns[0]["value"], "")]
    if sum(q.count(IMAGE) + a.count(IMAGE) for q, a in pairs) != 1:
        raise UtabenchError(f"{where}: the conversation must hold exactly one {IMAGE} (in the first human turn)")
    text, spans = render(template, pairs, tokenizer.eos_token, generation)
    ids: List[int] = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    labels: List[int] = [IGNORE_INDEX] * len(ids)
    offset = 0
    for k, piece in enumerate(text.split(IMAGE)):
        if k:
            ids += [image_token_id] * num_image_tokens
            labels += [IGNORE_INDEX] * num_image_tokens
            offset += len(IMAGE)
        if piece:
            enc = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)
            for token, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
                s, e = s + offset, e + offset
                learned = any(e > a and s < b for a, b in spans)
                ids.append(token)
                labels.append(token if learned else IGNORE_INDEX)
        offset += len(piece)
    if max_length and len(ids) > max_length:
        if ids.index(image_token_id) + num_image_tokens > max_length:
            raise UtabenchError(f"{where}: max_length {max_length} cuts into the image's {num_image_tokens} tokens; "
                                "raise max_length")
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels)
