"""Metric arithmetic with clip_benchmark's definitions: top-k accuracy from `topk`, mean per-class recall over the
classes present, and retrieval recall@k where a query counts as a hit if any positive is in its top k.
Hits are counted in integers and divided once, so the percentages are exact."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> Dict[int, torch.Tensor]:
    """{k: (rows,) bool} whether a row's target is among its k highest logits (ks larger than the class count are left
    out)."""
    ks = [k for k in ks if k <= logits.shape[1]]
    top = logits.topk(max(ks), dim=1, largest=True, sorted=True).indices
    hits = top.eq(targets.view(-1, 1))
    return {k: hits[:, :k].any(dim=1) for k in ks}


def percent_hits(hits: Dict[str, Any]) -> Dict[str, float]:
    """{metric: percent of its rows that hit}, each of `hits` (rows,) bool."""
    return {metric: 100.0 * int(hit.sum()) / len(hit) for metric, hit in hits.items()}


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> Dict[int, float]:
    """Percent of rows whose target is among the k highest logits (ks larger than the class count are left out)."""
    return {k: 100.0 * int(hit.sum()) / len(targets) for k, hit in topk_hits(logits, targets, ks).items()}


def mean_per_class_recall(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Percent; averaged over the classes that occur in `targets`."""
    recalls = [int((predictions[targets == c] == c).sum()) / int((targets == c).sum()) for c in torch.unique(targets)]
    return 100.0 * sum(recalls) / len(recalls)


def mean_average_precision(scores: torch.Tensor, multi_hot: torch.Tensor) -> float:
    """Percent: the mean over all classes of average precision (clip_benchmark's multi-label metric, from torchnet's
    meter): rank the samples by the class's score, average the precision at each positive; a class without positives
    counts 0."""
    ranks = torch.arange(1, scores.shape[0] + 1, dtype=torch.float32)
    total = 0.0
    for k in range(scores.shape[1]):
        truth = multi_hot[torch.sort(scores[:, k], 0, True).indices, k]
        precision = truth.float().cumsum(0) / ranks
        total += float(precision[truth.bool()].sum()) / max(float(truth.sum()), 1.0)
    return 100.0 * total / scores.shape[1]


def retrieval_recall(scores: torch.Tensor, positives: torch.Tensor, ks: Sequence[int], chunk: int = 1024
                     ) -> Dict[int, float]:
    """scores (queries, items), positives bool (queries, items): percent of queries with a positive in the top k."""
    hits = {k: 0 for k in ks}
    for start in range(0, scores.shape[0], chunk):
        block, pos = scores[start:start + chunk], positives[start:start + chunk]
        top = block.topk(min(max(ks), block.shape[1]), dim=1).indices  # k beyond the item count is all of them
        found = torch.gather(pos, 1, top)
        for k in ks:
            hits[k] += int(found[:, :k].any(dim=1).sum())
    return {k: 100.0 * hits[k] / scores.shape[0] for k in ks}



def positive_ranks(scores: torch.Tensor, positives: torch.Tensor, top: int = 10, chunk: int = 1024) -> torch.Tensor:
    """scores (queries, items), positives bool (queries, items): per query, the rank of its first positive (0: a
    positive comes first). Within the first `top` it is the place in `topk`'s order, as `retrieval_recall` finds it
    (so a rank below k is a hit at k exactly as counted there, tied scores included, for k <= top); beyond, how many
    items score above its best positive (at least `top`; the item count where it has none)."""
    out = []
    for start in range(0, scores.shape[0], chunk):
        block, pos = scores[start:start + chunk], positives[start:start + chunk]
        found = torch.gather(pos, 1, block.topk(min(top, block.shape[1]), dim=1).indices)
        best = block.masked_fill(~pos, float("-inf")).max(dim=1, keepdim=True).values
        beyond = (block > best).sum(dim=1).clamp(min=min(top, block.shape[1]))
        out.append(torch.where(found.any(dim=1), found.int().argmax(dim=1), beyond))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
