"""Few-shot linear probe: for each shot count k and seed, k training images per class, a linear probe fitted on their
frozen, L2-normalised features with CLIP_benchmark's recipe (tasks/linear_probe.py: AdamW lr 0.1, batch 64, 10
epochs, cosine, `torch.manual_seed(seed)` before the fit), scored on the whole test split.

The k images are CLIP_benchmark's selection (`--fewshot_k`): walk a `torch.randperm` of the train split (here from a
generator seeded `seed`, not the global one) and keep the first k of each class, so for one seed the 1-shot images
are among the 2-shot ones. A k that some class cannot fill is left out (CLIP_benchmark prints "insufficient data"),
and the record's details say which class fell short.

Weight decay: fixed, 0 by default (`weight_decay`), which is what CLIP_benchmark uses for a few-shot run without a
validation split. Decision: no search by default, because the search needs a labelled validation split of the full
train set (CLIP_benchmark's `--val_proportion` with `--fewshot_k`), i.e. far more labels than k a class, which is no
longer a k-shot result, and it costs 15 to 19 fits per (k, seed) instead of one. `wd_search: true` runs exactly
that (the validation part carved from the train split with the seed, the shots drawn from the rest, the final fit
on the shots only) for those who want CLIP_benchmark's numbers.

Metrics: `top1_k{k}`, the mean over seeds of the top-1 (%), and `top1_k{k}_std`, their sample standard deviation
(ddof 1; 0 with one seed). The record's interval of `top1_k{k}` resamples the test images, each carrying its hit
averaged over the seeds (tasks/bootstrap.py): the uncertainty of the test set, with the shots fixed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat

from utabench.core.context import Setup
from utabench.core.errors import UtabenchError
from utabench.core.registry import TASKS
from utabench.tasks.base import TaskOutput
from utabench.tasks.bootstrap import hits_samples
from utabench.tasks.linear_probe import (
    WD_GRID,
    FitOptions,
    carve_validation,
    fit_linear,
    fit_recipe,
    predict,
    preserved_rng,
    search_weight_decay,
)
from utabench.tasks.metrics import topk_hits
from utabench.tasks.probe_data import Counts, ProbeTask, Seeds, num_outputs, split_features


class FewShotOptions(FitOptions):
    shots: Counts = Field([1, 2, 4, 8, 16], min_length=1, description="images per class, e.g. 1,2,4,8,16 (the "
                          "default)")
    seeds: Seeds = Field([0, 1, 2], min_length=1, description="seeds of the selection and the fit, e.g. 0,1,2 (the "
                         "default)")
    weight_decay: NonNegativeFloat = Field(0.0, description="AdamW weight decay of the fit (default 0; ignored with "
                                           "wd_search)")
    wd_search: bool = Field(False, description="choose the weight decay as linear-probe does, on a validation part of "
                            "the train split (default false)")
    val_proportion: float = Field(0.2, gt=0, lt=1, description="with wd_search: the train split's share held out "
                                  "(default 0.2)")


def few_shot_indices(targets: torch.Tensor, k: int, seed: int) -> Tuple[torch.Tensor, List[int]]:
    """Rows of the first k images of each class along `torch.randperm(n)` from a generator seeded `seed`, in that walk's
    order (CLIP_benchmark's selection), and the classes with fewer than k images."""
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    labels = targets[perm]
    order = torch.argsort(labels, stable=True)  # grouped by class, each group in walk order
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(len(labels)) - starts
    kept = order[rank < k].sort().values
    return perm[kept], [int(c) for c, n in zip(classes, counts) if n < k]


def few_shot_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   options: Dict[str, Any], device: str = "cpu"
                   ) -> Tuple[Dict[str, float], Dict[str, Any], Dict[str, np.ndarray]]:
    """The metrics, the details and each test image's top-1 hit per k, averaged over the seeds
    ({`top1_k{k}`: (test images,) 0..1})."""
    train_x, test_x = F.normalize(train_x.float(), dim=-1), F.normalize(test_x.float(), dim=-1)
    num_classes = num_outputs(train_y)
    per_k: Dict[int, Dict[int, float]] = {}
    hits: Dict[int, Dict[int, torch.Tensor]] = {}
    weight_decays: Dict[str, float] = {}
    short: Dict[int, List[int]] = {}
    for k in options["shots"]:
        for seed in options["seeds"]:
            recipe = fit_recipe(options, seed)
            pool = val = None
            if options["wd_search"]:
                pool, val = carve_validation(len(train_x), options["val_proportion"], seed)
            rows, lacking = few_shot_indices(train_y if pool is None else train_y[pool], k, seed)
            if lacking:  # (with wd_search the pool, and so what a class has, depends on the seed)
                short[k] = lacking
                per_k.pop(k, None)
                break
            rows = rows if pool is None else pool[rows]
            weight_decay = options["weight_decay"]
            if val is not None:
                peak, _ = search_weight_decay(train_x[rows], train_y[rows], train_x[val], train_y[val], num_classes,
                                              recipe, device)
                weight_decay = float(WD_GRID[peak])
                weight_decays[f"k{k}_seed{seed}"] = weight_decay
            model = fit_linear(train_x[rows], train_y[rows], num_classes, weight_decay, recipe, device)
            hit = topk_hits(predict(model, test_x), test_y, (1,))[1]
            per_k.setdefault(k, {})[seed] = 100.0 * int(hit.sum()) / len(test_y)
            hits.setdefault(k, {})[seed] = hit
    if not per_k:
        smallest = int(torch.unique(train_y, return_counts=True)[1].min())
        raise UtabenchError(f"few-shot: no shot count of {options['shots']} fits; the smallest class of the train "
                            f"split has {smallest} images")
    metrics = {}
    for k, by_seed in per_k.items():
        values = list(by_seed.values())
        metrics[f"top1_k{k}"] = statistics.fmean(values)
        metrics[f"top1_k{k}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    details = {"top1_by_seed": {f"k{k}": {str(s): v for s, v in by_seed.items()} for k, by_seed in per_k.items()},
               "insufficient": {f"k{k}": classes[:20] for k, classes in short.items()},
               "weight_decay": weight_decays if options["wd_search"] else options["weight_decay"],
               "wd_search": options["wd_search"], "num_classes": num_classes, "lr": options["lr"],
               "epochs": options["epochs"], "batch_size": options["fit_batch_size"], "normalized": True}
    mean_hits = {f"top1_k{k}": torch.stack(list(hits[k].values())).double().mean(dim=0).numpy() for k in per_k}
    return metrics, details, mean_hits


@TASKS.register("few-shot", help="few-shot linear probes: k images a class (1, 2, 4, 8, 16), several seeds; top-1 mean "
                "and std")
class FewShot(ProbeTask):
    name = "few-shot"
    options = FewShotOptions

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:
        options = options or self.options_of({})
        feats = split_features(backbone, data, ctx)
        start = time.perf_counter()
        with preserved_rng(ctx.device):
            metrics, details, hits = few_shot_probe(feats.train.features, feats.train.targets, feats.test.features,
                                                    feats.test.targets, options, ctx.device)
        seconds = time.perf_counter() - start
        details.update(splits=list(data.splits), features=feats.described, precision="fp32",
                       image_features=feats.cached, seeds=list(options["seeds"]), shots=list(options["shots"]))
        return TaskOutput(metrics=metrics, num_images=feats.num_images, skipped_images=feats.skipped_images,
                          model_seconds=feats.seconds, train_seconds=seconds, details=details,
                          training={"probe": Setup(options["fit_batch_size"], "fp32", ctx.device_type, 1)},
                          samples=hits_samples(hits, feats.test.indices.numpy()))
