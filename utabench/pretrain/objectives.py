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
- `text-uta` (paper section 4, "UTA for pre-training the text encoder"): UTA on a CLIP text tower trained from
  scratch (recipe `text-distill`): the kept tokens of a caption (SOT, EOT and the unmasked words) enter the
  student's text tower, each aligned with a frozen CLIP text tower's token at the same position (computed on the
  whole caption), both after ln_final and text_projection, in the joint space.

The loss is the negative cosine similarity, averaged over the scored tokens (UNVERIFIED in the UTA code; EVA-02's
pretraining uses the same form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from utabench.core.registry import Registry

# Loss = f(pred, target, keep, mask): pred are the student's tokens in the joint space, target the teacher's
# (B, 1 + N, D), CLS first. For `kept` inputs pred is (B, 1 + K, D) in the order CLS, then `keep` (B, K) patch
# indices; otherwise pred is (B, 1 + N, D) and `mask` (B, N) marks the masked patches.
Loss = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    name: str
    label: str  # how tables name it (the paper's Table 6 rows)
    recipe: str  # the training recipe that runs it (pretrain.run.RECIPES): distill, contrastive or contrastive-ft
    student_input: str  # "kept": drop masked tokens; "mask_token": fill them with [MASK]; "full": no mask
    help: str
    loss: Optional[Loss] = None

    @property
    def uses_mask(self) -> bool:
        return self.student_input in ("kept", "mask_token")

    @property
    def needs_mask_token(self) -> bool:
        return self.student_input == "mask_token"


OBJECTIVES: Registry = Registry("pretraining objective", "pretraining objectives")


def neg_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of -cos(pred, target); both (..., D)."""
    return -F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()


def _with_cls(positions: torch.Tensor) -> torch.Tensor:
    """(B, N) patch positions or flags -> (B, 1 + N), CLS first (index 0, never masked)."""
    return torch.cat([torch.zeros_like(positions[:, :1]), positions], dim=1)


def _kept_alignment(pred, target, keep, mask):
    index = torch.cat([torch.zeros_like(keep[:, :1]), keep + 1], dim=1)
    return neg_cosine(pred, target.gather(1, index[..., None].expand(-1, -1, target.shape[-1])))


def _every_token(pred, target, keep, mask):
    return neg_cosine(pred, target)


def _masked_prediction(pred, target, keep, mask):
    masked = _with_cls(mask)
    return neg_cosine(pred[masked], target[masked])


def _masked_and_kept(pred, target, keep, mask):
    masked = _with_cls(mask)
    return neg_cosine(pred[masked], target[masked]) + neg_cosine(pred[~masked], target[~masked])


def _kept_text_alignment(pred, target, keep, mask):
    """Text: pred (B, L, D) kept tokens packed left, `keep` (B, L) their positions in the text, `mask` (B, L) True on
    the filler after a row's last kept token (not scored); target (B, context, D) the teacher's tokens."""
    aligned = target.gather(1, keep[..., None].expand(-1, -1, target.shape[-1]))
    return neg_cosine(pred[~mask], aligned[~mask])


for _objective in (
    Objective("uta", "UTA", "distill", "kept", "unmasked token alignment: kept tokens + CLS in, cosine on them",
              _kept_alignment),
    Objective("mim", "MIM", "distill", "mask_token", "EVA-style MIM: [MASK] tokens in, cosine on the masked positions",
              _masked_prediction),
    Objective("fd", "FD", "distill", "full", "feature distillation: the whole image in, cosine on every token",
              _every_token),
    Objective("uta+mim", "UTA+MIM", "distill", "mask_token",
              "[MASK] tokens in, cosine on kept + CLS and on masked positions", _masked_and_kept),
    Objective("text-uta", "UTA (text)", "text-distill", "kept",
              "text UTA (paper sec. 4): a text tower from scratch, its kept tokens aligned with a CLIP text tower's",
              _kept_text_alignment),
    Objective("clip", "CLIP (teacher)", "contrastive", "pairs", "image-text contrastive training of an open_clip model"),
    Objective("clip-ft", "UTA†", "contrastive-ft", "pairs",
              "contrastive fine-tuning of a UTA student with its CLIP text tower (paper A.1)"),
):
    OBJECTIVES.register(_objective.name, help=_objective.help)(_objective)
