"""The pretraining objectives of the paper's Table 6, as one switch of the same trainer.

- `uta`: only the kept patch tokens (+ CLS) enter the student; the loss aligns every token it outputs (CLS and
  kept patches) with the teacher's tokens at the same positions.
- `mim` (EVA-style masked feature prediction): the full sequence enters, masked patches replaced by a learned
  [MASK] embedding; the loss is on the masked positions only.
- `fd` (feature distillation, re-implemented as in the paper's Table 6): the full, unmasked image enters; the loss
  is on every token, CLS included. Decision: the same negative-cosine loss as the others (Wei et al. use a
  smooth-L1 on whitened features), so the objectives differ only in what the student sees and where it is scored.
- `uta+mim`: the full sequence with [MASK] embeddings at masked positions; token alignment on CLS and the kept
  positions plus feature prediction on the masked ones, the two means summed.

The loss is the negative cosine similarity, averaged over the scored tokens (UNVERIFIED in the UTA code; EVA-02's
pretraining uses the same form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F

from utabench.core.errors import UtabenchError


@dataclass(frozen=True)
class Objective:
    name: str
    student_input: str  # "kept": drop masked tokens; "mask_token": fill them with [MASK]; "full": no mask
    help: str

    @property
    def uses_mask(self) -> bool:
        return self.student_input != "full"

    @property
    def needs_mask_token(self) -> bool:
        return self.student_input == "mask_token"


OBJECTIVES: Dict[str, Objective] = {o.name: o for o in (
    Objective("uta", "kept", "unmasked token alignment: kept tokens + CLS in, cosine on them"),
    Objective("mim", "mask_token", "EVA-style MIM: [MASK] tokens in, cosine on the masked positions"),
    Objective("fd", "full", "feature distillation: the whole image in, cosine on every token"),
    Objective("uta+mim", "mask_token", "[MASK] tokens in, cosine on kept + CLS and on masked positions"),
)}


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise UtabenchError(f"unknown pretraining objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def neg_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of -cos(pred, target); both (..., D)."""
    return -F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()


def objective_loss(objective: Objective, pred: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None,
                   mask: torch.Tensor | None) -> torch.Tensor:
    """pred: the student's tokens in the joint space; target: the teacher's (B, 1 + N, D), CLS first.

    For `uta`, pred is (B, 1 + K, D) in the order CLS, then `keep` (B, K) patch indices; otherwise pred is
    (B, 1 + N, D) and `mask` (B, N) marks the masked patches.
    """
    if objective.name == "uta":
        index = torch.cat([torch.zeros_like(keep[:, :1]), keep + 1], dim=1)
        aligned = target.gather(1, index[..., None].expand(-1, -1, target.shape[-1]))
        return neg_cosine(pred, aligned)
    if objective.name == "fd":
        return neg_cosine(pred, target)
    masked = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)  # CLS is never masked
    loss = neg_cosine(pred[masked], target[masked])
    if objective.name == "uta+mim":
        loss = loss + neg_cosine(pred[~masked], target[~masked])
    return loss
