"""DataComp's worst-group accuracy and iWildCam's macro F1 against their reference definitions: sklearn's f1_score
with DataComp's arguments, and the per-group minimum written out as WILDS computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from utabench.tasks.group_metrics import group_accuracies, macro_f1, worst_group_accuracy


def test_macro_f1_equals_sklearn_over_the_classes_present():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 12, 300)
    predictions = np.where(rng.random(300) < 0.4, targets, rng.integers(0, 15, 300))  # also classes never present
    theirs = 100 * f1_score(targets, predictions, average="macro", labels=np.unique(targets))
    assert macro_f1(torch.as_tensor(predictions), torch.as_tensor(targets)) == pytest.approx(theirs, abs=1e-9)


def test_worst_group_is_the_minimum_over_groups_with_samples():
    rng = np.random.default_rng(1)
    hits = rng.random(500) < 0.6
    groups = rng.choice([0, 2, 3, 7], 500)  # groups 1, 4-6 are empty: WILDS' n_groups counts them, the minimum not
    per_group = {g: 100 * hits[groups == g].mean() for g in (0, 2, 3, 7)}
    ours = group_accuracies(torch.as_tensor(hits), torch.as_tensor(groups))
    assert ours.keys() == per_group.keys() and all(ours[g] == pytest.approx(v, abs=1e-9) for g, v in per_group.items())
    assert worst_group_accuracy(torch.as_tensor(hits), torch.as_tensor(groups)) == pytest.approx(
        min(per_group.values()), abs=1e-9)
