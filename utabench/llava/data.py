"""LLaVA's data files: the training json (a list of {id, image, conversations: [{from: human|gpt, value}]}, or the
same records one per line as .jsonl) with an image folder, and the jsonl files of LLaVA-Bench. Malformed input is
reported with its file and line number. Stage 1's file is LLaVA v1's `chat.json` (LLaVA-CC3M-Pretrain-595K, the
filtered CC-3M set the UTA paper's A.1 trains on) or LLaVA-1.5's `blip_laion_cc_sbu_558k.json` (558K LAION/CC/SBU
pairs, the name the embedded world's file takes), stage 2's `llava_instruct_150k.json`.

A training sample is the image through the backbone's own eval transform (resize, centre crop, its mean / std)
and the conversation encoded with the stage's template; batches are padded on the right. Both are deterministic, so a
set whose samples fit in `MEMO_BYTES` is kept in memory from its first epoch on (a small set trained for several
epochs, as the embedded world's, reads and tokenizes each record once; a web-scale set is read as it comes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from utabench.core.errors import UtabenchError
from utabench.core.io import read_jsonl
from utabench.llava.conversation import IGNORE_INDEX, encode

MEMO_BYTES = 256 * 2**20


def read_conversations(path: str | Path) -> List[Dict[str, Any]]:
    """A LLaVA training file: a JSON list of records (.json) or one record per line (.jsonl)."""
    path = Path(path)
    what = "LLaVA training data"
    if path.suffix == ".jsonl":
        records = read_jsonl(path, what)
    else:
        if not path.is_file():
            raise UtabenchError(f"{what} {path} does not exist; expected a json list of {{id, image, conversations}}")
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UtabenchError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(records, list):
            raise UtabenchError(f"{path} holds a {type(records).__name__}; expected a list of {{id, image, "
                                "conversations}} records")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list) \
                or not isinstance(record.get("image"), str):
            raise UtabenchError(f"{path}: record {i} (id {record.get('id') if isinstance(record, dict) else '?'}) "
                                "needs `image` (a file name) and `conversations` (a list of {from, value})")
    if not records:
        raise UtabenchError(f"{path} holds no records")
    return records


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise UtabenchError(f"image {path} could not be read ({exc})") from None


class ConversationSet(Dataset):
    """Samples of one training stage; indexed by (index, epoch) as the step sampler yields them."""

    def __init__(self, records: Sequence[Dict[str, Any]], image_root: str | Path, transform, tokenizer,
                 template: str, image_token_id: int, num_image_tokens: int, max_length: int, source: str):
        self.records, self.image_root, self.transform = list(records), Path(image_root), transform
        self.tokenizer, self.template, self.max_length, self.source = tokenizer, template, max_length, source
        self.image_token_id, self.num_image_tokens = image_token_id, num_image_tokens
        if not self.image_root.is_dir():
            raise UtabenchError(f"image folder {self.image_root} does not exist (the `images` of {source})")
        missing = [r["image"] for r in self.records if not (self.image_root / r["image"]).is_file()]
        if missing:
            raise UtabenchError(f"{len(missing)} images of {source} are not in {self.image_root} (first: "
                                f"{missing[0]})")
        self._memo: Dict[int, Dict[str, torch.Tensor]] = {}
        self._memo_fits: Optional[bool] = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key) -> Dict[str, Any]:
        index = key[0] if isinstance(key, tuple) else key
        sample = self._memo.get(index)
        if sample is None:
            sample = self._read(index)
            if self._memo_fits is None:
                self._memo_fits = len(self) * sum(v.nbytes for v in sample.values()) <= MEMO_BYTES
            if self._memo_fits:
                self._memo[index] = sample
        return sample

    def _read(self, index: int) -> Dict[str, torch.Tensor]:
        record = self.records[index]
        encoded = encode(self.template, record["conversations"], self.tokenizer, self.image_token_id,
                         self.num_image_tokens, where=f"{self.source} record {index} (id {record.get('id')})",
                         max_length=self.max_length)
        return {"pixel_values": self.transform(open_image(self.image_root / record["image"])),
                "input_ids": torch.tensor(encoded.input_ids), "labels": torch.tensor(encoded.labels)}


def collate(samples: List[Dict[str, Any]], pad_id: int) -> Dict[str, torch.Tensor]:
    length = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), length), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = s["input_ids"], s["labels"], 1
    return {"pixel_values": torch.stack([s["pixel_values"] for s in samples]), "input_ids": ids, "labels": labels,
            "attention_mask": mask}

