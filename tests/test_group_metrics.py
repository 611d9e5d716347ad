"""DataComp's worst-group accuracy and iWildCam's macro F1 against the code DataComp computes them with: sklearn's
f1_score with DataComp's arguments; WILDS' Accuracy over a CombinatorialGrouper on one metadata field, with the
group averaging DataComp puts in place of WILDS' (a scatter-add; WILDS' own needs the compiled torch_scatter)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from wilds.common import utils as wilds_utils
from wilds.common.grouper import CombinatorialGrouper
from wilds.common.metrics import metric as wilds_metric
from wilds.common.metrics.all_metrics import Accuracy

from utabench.tasks.group_metrics import group_accuracies, macro_f1, worst_group_accuracy


pytestmark = pytest.mark.filterwarnings("ignore:Failed to check for latest version")  # wilds asks PyPI, offline here


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


def _scatter_avg_over_groups(values, groups, n_groups):
    """The group mean DataComp substitutes for WILDS' `avg_over_groups` (eval_utils/wilds_eval.py): sums and counts
    by scatter-add, then their ratio (an empty group is 0 / 0)."""
    counts = torch.zeros(n_groups).scatter_(0, groups, torch.ones(len(values)), reduce="add")
    sums = torch.zeros(n_groups).scatter_(0, groups, values.float(), reduce="add")
    return sums / counts, counts


def test_worst_group_equals_wilds_as_datacomp_calls_it(monkeypatch):
    monkeypatch.setattr(wilds_utils, "avg_over_groups", _scatter_avg_over_groups)
    monkeypatch.setattr(wilds_metric, "avg_over_groups", _scatter_avg_over_groups)
    rng = np.random.default_rng(2)
    targets = torch.as_tensor(rng.integers(0, 6, 400))
    top5 = torch.as_tensor(np.stack([rng.permutation(6)[:5] for _ in range(400)]))
    region = torch.as_tensor(rng.choice([0, 1, 3, 4], 400))  # groups 2 and 5 empty
    dataset = SimpleNamespace(metadata_fields=["region"], metadata_array=region.view(-1, 1), metadata_map=None)
    grouper = CombinatorialGrouper(dataset, ["region"])
    groups = grouper.metadata_to_group(region.view(-1, 1))
    # GeoDE / FMoW: top-1 by region; Dollar Street: DataComp's top-5 hit (1 or 0) against 1, by income group
    top1 = Accuracy().compute_group_wise(top5[:, 0], targets, groups, grouper.n_groups, return_dict=False)[2]
    hit5 = (top5 == targets.view(-1, 1)).any(dim=1)
    worst5 = Accuracy().compute_group_wise(hit5.long(), torch.ones_like(targets), groups, grouper.n_groups,
                                           return_dict=False)[2]
    assert worst_group_accuracy(top5[:, 0] == targets, region) / 100 == pytest.approx(float(top1), abs=1e-6)
    assert worst_group_accuracy(hit5, region) / 100 == pytest.approx(float(worst5), abs=1e-6)
