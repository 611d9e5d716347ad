"""DataComp's group and class-balanced metrics on zero-shot predictions, with its definitions (mlfoundations/datacomp
`eval_utils`, on WILDS' metric classes):

- worst-group accuracy: per group of a metadata column (groups with no sample left out), the mean of the per-sample
  hit (top-1, or top-5 for Dollar Street); the minimum over groups (`Accuracy`/`TopKAccuracy` with a
  `CombinatorialGrouper` on one field, reduced with `minimum`);
- macro F1 (iWildCam): sklearn's `f1_score(y, pred, average="macro", labels=unique(y))`, the mean over the classes
  present in the targets of 2TP / (2TP + FP + FN); a class never predicted correctly counts 0.

Percentages, counted in integers and divided once.
"""

from __future__ import annotations

from typing import Dict

import torch


def group_accuracies(hits: torch.Tensor, groups: torch.Tensor) -> Dict[int, float]:
    """Percent of hits in each group that has samples."""
    return {int(g): 100.0 * int(hits[groups == g].sum()) / int((groups == g).sum()) for g in torch.unique(groups)}


def worst_group_accuracy(hits: torch.Tensor, groups: torch.Tensor) -> float:
    """The lowest group accuracy (percent) over the groups that have samples."""
    return min(group_accuracies(hits, groups).values())


def macro_f1(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    """Percent: the mean F1 over the classes present in `targets` (predictions of other classes count as misses)."""
    scores = []
    for c in torch.unique(targets):
        tp = int(((predictions == c) & (targets == c)).sum())
        fp = int(((predictions == c) & (targets != c)).sum())
        fn = int(((predictions != c) & (targets == c)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn))
    return 100.0 * sum(scores) / len(scores)
