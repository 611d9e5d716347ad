"""Which published row a backbone is compared with.

A backbone's config names the model it reproduces: `paper: {method: UTA, model: B/16@224, pairs: 2B}` (the released
UTA-B/16, contrastively fine-tuned on 2B image-text pairs). Every published row carries the same key: method,
architecture, patch size, input size of the pretrained model, and image-text pairs, as far as its table and the
paper's text decide them (`utabench/results/paper_table*.csv`; blank where the paper leaves it open). The pairs are
what tells the paper's `UTA` (image-only pretraining, 0B) from `UTA†` (after contrastive fine-tuning, e.g. 2B).
The key is the model a row describes, where the table prints otherwise (Table 2's Open-CLIP L: 34B there, 32B in
Table 1); the paper line shows what is printed and says which model it is.

A row matches when every field both sides state is equal. Exactly one match is the comparison; none or several
are reported as such in the table, never resolved by taking the first row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import pandas as pd
from pydantic import ConfigDict, field_validator

from utabench.core.errors import UtabenchError
from utabench.core.schema import Schema

KEY_FIELDS = ("method", "arch", "patch", "input", "pairs")
_MODEL = re.compile(r"^(?P<arch>[A-Za-z]+)(?:/(?P<patch>\d+))?(?:@(?P<input>\d+))?$")


class PaperSpec(Schema):
    """The `paper:` entry of a backbone."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    method: str  # as the paper spells it: CLIP, Open-CLIP, EVA-02-CLIP, EVA-02, UTA, ...
    model: str  # ARCH[/PATCH][@INPUT], e.g. B/16@224, L/14@336, g/14
    pairs: Optional[str] = None  # image-text pairs seen, e.g. 0B (UTA without contrastive fine-tuning), 2B, 13B

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not _MODEL.match(value.strip()):
            raise ValueError(f"model {value!r} must be ARCH[/PATCH][@INPUT], e.g. B/16@224 or L/14")
        return value.strip()


def parse_paper_option(text: str) -> Dict[str, str]:
    """`--paper 'METHOD MODEL [PAIRS]'` as a `paper:` entry."""
    parts = text.split()
    if len(parts) not in (2, 3):
        raise UtabenchError(f"--paper {text!r} must be 'METHOD MODEL [PAIRS]', e.g. 'UTA B/16@224 2B'")
    return dict(zip(("method", "model", "pairs"), parts))


def _norm(field: str, value) -> Optional[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return None
    text = str(value).strip()
    if field == "pairs":
        return text.upper()
    if field in ("patch", "input"):
        return str(int(float(text)))
    return text


def spec_key(paper: Dict[str, str]) -> Dict[str, Optional[str]]:
    """A backbone's `paper:` entry as a row key."""
    found = _MODEL.match(str(paper.get("model", "")).strip())
    parts = found.groupdict() if found else {"arch": None, "patch": None, "input": None}
    key = {"method": paper.get("method"), **parts, "pairs": paper.get("pairs")}
    return {field: _norm(field, key.get(field)) for field in KEY_FIELDS}


def show_key(key: Dict[str, Optional[str]]) -> str:
    model = (key.get("arch") or "?") + (f"/{key['patch']}" if key.get("patch") else "") + (
        f"@{key['input']}" if key.get("input") else "")
    return " ".join(part for part in (key.get("method"), model, key.get("pairs")) if part)


def row_key(row: pd.Series) -> Dict[str, Optional[str]]:
    return {field: _norm(field, row.get(f"key_{field}")) for field in KEY_FIELDS}


@dataclass
class Match:
    row: Optional[pd.Series]  # the published row, when exactly one matches
    label: str  # what the table shows on the paper line
    unstated: List[str]  # key fields the backbone gives but the matched row leaves open


def match_row(published: pd.DataFrame, paper: Optional[Dict[str, str]], table: int) -> Optional[Match]:
    """The published row of `table` for a backbone's `paper:` entry (None when the backbone names none)."""
    if not isinstance(paper, dict):
        return None
    ours = spec_key(paper)
    hits = []
    for _, row in published.iterrows():
        theirs = row_key(row)
        if all(ours[f] is None or theirs[f] is None or ours[f] == theirs[f] for f in KEY_FIELDS):
            hits.append((row, theirs))
    if not hits:
        return Match(None, f"no row of Table {table} for {show_key(ours)}", [])
    if len(hits) > 1:
        shown = "; ".join(show_key(key) for _, key in hits)
        return Match(None, f"ambiguous in Table {table}: {show_key(ours)} matches {shown} (state model and pairs)",
                     [])
    row, theirs = hits[0]
    unstated = [f for f in KEY_FIELDS if ours[f] is not None and theirs[f] is None]
    pairs = row.get("pairs")
    label = f"{row['method']} {row['model']}" + (f" {pairs}" if isinstance(pairs, str) and pairs else "")
    if isinstance(pairs, str) and theirs["pairs"] and _norm("pairs", pairs) != theirs["pairs"]:
        label += f" (as printed; the {theirs['pairs']} model)"
    if unstated:
        label += f" (Table {table} does not state its {', '.join(unstated)})"
    return Match(row, label, unstated)
