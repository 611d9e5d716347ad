"""Weighted kNN classification (DINOv2's `eval/knn.py`) on frozen, L2-normalised `encode_image` features.

For a test image q: s_j = <q, f_j> over the train split; the max_k = max(ks) nearest (capped at the train size),
sorted by similarity; w = softmax(s / T) over those max_k (T = 0.07); for each k, the class scores
p_k(c) = sum of w_i over the first k neighbours with label c (DINOv2's probas: they do not sum to 1 for k < max_k).
Top-1 / top-5 (5 or more classes) of p_k, in percent, as `top1_k{k}` / `top5_k{k}`; the class count is the largest
training label + 1. Every k is reported on the test split (DINOv2's protocol: no validation split; choosing k or T
from these numbers would tune on test).

Ties are broken by index, not left to `topk`: neighbours of equal similarity in training-row order (a stable sort on
(-s, j)), classes of equal score lowest class first. The features are those of the other probes (`encode_image`: a
CLIP-style backbone's projected embedding; DINOv2 uses its final-norm CLS token).
"""

from __future__ import annotations

import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat

from utabench.core.registry import TASKS
from utabench.tasks.base import TaskOutput
from utabench.tasks.bootstrap import hits_samples
from utabench.tasks.metrics import percent_hits
from utabench.tasks.probe_data import Counts, ProbeTask, SplitOptions, num_outputs, split_features


class KnnOptions(SplitOptions):
    ks: Counts = Field([10, 20, 100, 200], min_length=1, description="neighbour counts, e.g. 10,20,100,200 (the "
                       "default)")
    temperature: PositiveFloat = Field(0.07, description="T of the softmax(similarity / T) weights (default 0.07)")


def nearest(similarity: torch.Tensor, count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The `count` largest similarities of each row and their columns, ordered by (-s, column): `topk`, then ordered
    by index among equals; a row whose count-th value ties with a value left out is sorted in full (stable)."""
    values, columns = similarity.topk(count, dim=1)
    columns, order = columns.sort(dim=1)
    values = values.gather(1, order)
    order = values.argsort(dim=1, descending=True, stable=True)
    values, columns = values.gather(1, order), columns.gather(1, order)
    boundary = (similarity >= values[:, -1:]).sum(dim=1) > count
    if boundary.any():
        rows = boundary.nonzero()[:, 0]
        full_values, full_columns = similarity[rows].sort(dim=1, descending=True, stable=True)
        values[rows], columns[rows] = full_values[:, :count], full_columns[:, :count]
    return values, columns


def knn_scores(train_x: torch.Tensor, train_y: torch.Tensor, queries: torch.Tensor, ks: Sequence[int],
               temperature: float, num_classes: int) -> Dict[int, torch.Tensor]:
    """DINOv2's class scores p_k (queries, classes) for each k; features already normalised."""
    max_k = min(max(ks), len(train_x))
    values, columns = nearest(queries @ train_x.T, max_k)
    weights = (values / temperature).softmax(dim=1)
    labels = train_y[columns]
    out = {}
    for k in ks:
        k_eff = min(k, max_k)
        scores = torch.zeros(len(queries), num_classes, dtype=weights.dtype, device=weights.device)
        out[k] = scores.scatter_add_(1, labels[:, :k_eff], weights[:, :k_eff])
    return out


def ranked_hits(scores: torch.Tensor, targets: torch.Tensor, top: int) -> torch.Tensor:
    """(queries, top) bool: the target at each rank, classes ranked by (-score, class)."""
    ranking = scores.argsort(dim=1, descending=True, stable=True)[:, :top]
    return ranking.eq(targets.view(-1, 1))


def knn_hits(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             ks: Sequence[int], temperature: float = 0.07, device: str = "cpu", chunk: int = 256
             ) -> Dict[str, np.ndarray]:
    """{`top1_k{k}` (and `top5_k{k}` with 5 or more classes): (test images,) bool} whether the weighted kNN found
    each test image's class."""
    train_x = F.normalize(train_x.float(), dim=-1).to(device)
    test_x = F.normalize(test_x.float(), dim=-1)
    train_y = train_y.to(device)
    num_classes = num_outputs(train_y)
    tops = [1, 5] if num_classes >= 5 else [1]
    hits: Dict[Tuple[int, int], List[torch.Tensor]] = {(k, t): [] for k in ks for t in tops}
    for start in range(0, len(test_x), chunk):
        queries = test_x[start:start + chunk].to(device)
        targets = test_y[start:start + chunk].to(device)
        for k, scores in knn_scores(train_x, train_y, queries, ks, temperature, num_classes).items():
            found = ranked_hits(scores, targets, max(tops))
            for t in tops:
                hits[k, t].append(found[:, :t].any(dim=1).cpu())
    return {f"top{t}_k{k}": torch.cat(hits[k, t]).numpy() for t in tops for k in ks}


def knn_classify(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 ks: Sequence[int], temperature: float = 0.07, device: str = "cpu", chunk: int = 256
                 ) -> Dict[str, float]:
    """`top1_k{k}` (and `top5_k{k}` with 5 or more classes) of the weighted kNN, in percent."""
    return percent_hits(knn_hits(train_x, train_y, test_x, test_y, ks, temperature, device, chunk))


@TASKS.register("knn", help="weighted kNN on frozen image features (DINOv2's: softmax(s/0.07) over the nearest, k 10, "
                "20, 100, 200): top-1, top-5 per k")
class Knn(ProbeTask):
    name = "knn"
    options = KnnOptions

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:
        options = options or self.options_of({})
        feats = split_features(backbone, data, ctx)
        start = time.perf_counter()
        ks: List[int] = list(options["ks"])
        hits = knn_hits(feats.train.features, feats.train.targets, feats.test.features, feats.test.targets, ks,
                        options["temperature"], ctx.device)
        metrics = percent_hits(hits)
        seconds = time.perf_counter() - start
        details = {"ks": ks, "temperature": options["temperature"], "weighting": "softmax over max_k (DINOv2)",
                   "train_images": len(feats.train.indices), "test_images": len(feats.test.indices),
                   "num_classes": num_outputs(feats.train.targets), "splits": list(data.splits),
                   "features": feats.described, "image_features": feats.cached,
                   "knn_seconds": seconds}
        if max(ks) > len(feats.train.indices):
            details["ks_capped_at"] = len(feats.train.indices)
        return TaskOutput(metrics=metrics, num_images=feats.num_images, skipped_images=feats.skipped_images,
                          model_seconds=feats.seconds, details=details,
                          samples=hits_samples(hits, feats.test.indices.numpy()))
