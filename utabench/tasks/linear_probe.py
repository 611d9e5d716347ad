"""Linear probe with CLIP_benchmark's recipe (clip_benchmark/metrics/linear_probe.py, 1.6.2): a `Linear(D, C)` on
frozen, L2-normalised `encode_image` features, trained with AdamW (lr 0.1, betas and eps torch's defaults), batch 64,
10 epochs, a per-step cosine schedule without warm-up and cross-entropy, `torch.manual_seed(seed)` before every fit
(so each fit starts from the same init and shuffles in the same order); C = the largest training label + 1.

The weight decay is searched on a validation split carved from the train split, as CLIP_benchmark does with
`--val_proportion` (OpenAI CLIP's A.3 search with AdamW): np.logspace(-6, 2, 97); first the indices
0, 16, ..., 96, then three-point refinements around the peak with spans 8, 4, 2, 1, each keeping the first
candidate with the strictly highest validation top-1 (left, peak, right; all zero gives index 0) -- CLIP_benchmark's
`find_peak`. A candidate evaluated twice is fitted once (the fit is deterministic). The final probe is fitted on
train + val at the best weight decay and scored on the test split: top-1, top-5 (with 5 or more classes) and mean
per-class recall, in percent.

Where this differs from CLIP_benchmark, on purpose:
- The validation split is `torch.utils.data.random_split(train, [1 - p, p])` with its own generator seeded by
  `split_seed` (default: `seed`); CLIP_benchmark uses the global generator, whose state depends on everything that
  ran before (model construction), so its split is not reproducible from the seed alone. p defaults to 0.2 (without
  `--val_proportion` CLIP_benchmark silently uses weight decay 0).
- The train part keeps the split's order; CLIP_benchmark also walks a `torch.randperm` of it (its few-shot
  selection, which with all the data only reorders the rows). Same data, another shuffle order.
- Probes train in fp32 (CLIP_benchmark autocasts by default; on CPU that is bf16).
- The global RNG is restored after the probe, so it changes nothing else in the run.
`tests/test_probes.py` runs CLIP_benchmark's own `evaluate` on the same features, split and seed (with its rows
pre-permuted to undo its randperm) and gets the same weight decay and top-1.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt
from torch.utils.data import DataLoader, random_split

from utabench.core.context import Setup
from utabench.core.errors import UtabenchError
from utabench.core.registry import TASKS
from utabench.tasks.base import TaskOutput
from utabench.tasks.bootstrap import classification_samples
from utabench.tasks.metrics import mean_per_class_recall, topk_accuracy
from utabench.tasks.probe_data import ProbeTask, SplitOptions, num_outputs, split_features

WD_GRID = np.logspace(-6, 2, 97)  # CLIP_benchmark's weight decays, 12 a decade
WD_INIT = (0, 16, 32, 48, 64, 80, 96)  # np.logspace(-6, 2, 7) within the grid, by index
SPANS = (8, 4, 2, 1)


@dataclass(frozen=True)
class FitRecipe:
    lr: float = 0.1
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0


class FitOptions(SplitOptions):
    lr: PositiveFloat = Field(0.1, description="AdamW learning rate, cosine to 0 without warm-up (default 0.1)")
    epochs: PositiveInt = Field(10, description="epochs of every fit (default 10)")
    fit_batch_size: PositiveInt = Field(64, description="batch of the probe's training (default 64)")


def fit_recipe(options: Dict[str, Any], seed: int) -> FitRecipe:
    """The fit settings of a task's options, seeded `seed`."""
    return FitRecipe(lr=options["lr"], epochs=options["epochs"], batch_size=options["fit_batch_size"], seed=seed)


class LinearProbeOptions(FitOptions):
    seed: NonNegativeInt = Field(0, description="torch.manual_seed before every fit (CLIP_benchmark's --seed; "
                                 "default 0)")
    val_proportion: float = Field(0.2, gt=0, lt=1, description="share of the train split held out to choose the "
                                  "weight decay (default 0.2)")
    split_seed: Optional[NonNegativeInt] = Field(None, description="seed of the validation split's own generator "
                                                 "(default: seed)")


def cosine_lr(base_lr: float, step: int, steps: int) -> float:
    """CLIP_benchmark's `cosine_lr` without warm-up, in float64 as there."""
    return float(0.5 * (1 + np.cos(np.pi * step / steps)) * base_lr)


@contextlib.contextmanager
def preserved_rng(device: str):
    """The global RNG (CPU, and the current CUDA device) as it was before: the probes seed it as CLIP_benchmark does."""
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def fit_linear(features: torch.Tensor, targets: torch.Tensor, num_classes: int, weight_decay: float,
               recipe: FitRecipe, device: str = "cpu") -> torch.nn.Linear:
    """CLIP_benchmark's `train`: seed, Linear init, then the shuffled batches of a `DataLoader(shuffle=True)` (the
    same draws from the global RNG as its loader over the features; the rows are indexed on the device)."""
    torch.manual_seed(recipe.seed)
    model = torch.nn.Linear(features.shape[1], num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    loader = DataLoader(range(len(features)), batch_size=recipe.batch_size, shuffle=True)
    x, y = features.to(device), targets.to(device)
    steps = recipe.epochs * len(loader)
    for epoch in range(recipe.epochs):
        for i, index in enumerate(loader):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(recipe.lr, i + epoch * len(loader), steps)
            index = index.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
    return model


@torch.no_grad()
def predict(model: torch.nn.Linear, features: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    device = model.weight.device
    return torch.cat([model(features[i:i + chunk].to(device)).float().cpu() for i in range(0, len(features), chunk)])


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, float]:
    acc = topk_accuracy(logits, targets, (1, 5))
    metrics = {"top1": acc[1], "mean_per_class_recall": mean_per_class_recall(logits.argmax(1), targets)}
    if 5 in acc:
        metrics["top5"] = acc[5]
    return metrics


def carve_validation(n: int, proportion: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row indices (train part, val part): `random_split(range(n), [1 - p, p])` with a generator seeded `seed`."""
    train, val = random_split(range(n), [1 - proportion, proportion], generator=torch.Generator().manual_seed(seed))
    if not len(train) or not len(val):
        raise UtabenchError(f"val_proportion {proportion} of {n} training images leaves an empty "
                            f"{'validation' if not len(val) else 'training'} part")
    return torch.tensor(train.indices, dtype=torch.long), torch.tensor(val.indices, dtype=torch.long)


def search_weight_decay(train_x, train_y, val_x, val_y, num_classes: int, recipe: FitRecipe, device: str = "cpu"
                        ) -> Tuple[int, Dict[int, float]]:
    """The index into WD_GRID that CLIP_benchmark's search ends at, and the validation top-1 (%) of every index
    tried."""
    tried: Dict[int, float] = {}

    def val_top1(index: int) -> float:
        if index not in tried:
            model = fit_linear(train_x, train_y, num_classes, float(WD_GRID[index]), recipe, device)
            tried[index] = topk_accuracy(predict(model, val_x), val_y, (1,))[1]
        return tried[index]

    def find_peak(indices) -> int:
        best, best_acc = 0, 0.0  # as CLIP_benchmark: strictly greater wins, so the first of equals; all 0 -> 0
        for index in indices:
            acc = val_top1(index)
            if best_acc < acc:
                best, best_acc = index, acc
        return best

    peak = find_peak(WD_INIT)
    for span in SPANS:
        peak = find_peak([max(peak - span, 0), peak, min(peak + span, len(WD_GRID) - 1)])
    return peak, tried


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 recipe: FitRecipe, val_proportion: float = 0.2, split_seed: Optional[int] = None,
                 normalize: bool = True, device: str = "cpu"
                 ) -> Tuple[Dict[str, float], Dict[str, Any], torch.Tensor]:
    """Metrics on the test rows, details (best weight decay, validation top-1 of every candidate) and the test rows'
    top-5 classes (for the bootstrap intervals)."""
    if normalize:
        train_x, test_x = F.normalize(train_x.float(), dim=-1), F.normalize(test_x.float(), dim=-1)
    num_classes = num_outputs(train_y)
    split_seed = recipe.seed if split_seed is None else split_seed
    part, val = carve_validation(len(train_x), val_proportion, split_seed)
    peak, tried = search_weight_decay(train_x[part], train_y[part], train_x[val], train_y[val], num_classes, recipe,
                                      device)
    best = float(WD_GRID[peak])
    model = fit_linear(torch.cat([train_x[part], train_x[val]]), torch.cat([train_y[part], train_y[val]]),
                       num_classes, best, recipe, device)
    logits = predict(model, test_x)
    metrics = classification_metrics(logits, test_y)
    candidates: List[Dict[str, float]] = [{"weight_decay": float(WD_GRID[i]), "val_top1": tried[i]}
                                          for i in sorted(tried)]
    details = {"weight_decay": best, "weight_decay_index": peak, "val_top1": tried[peak], "candidates": candidates,
               "fits": len(tried) + 1, "seed": recipe.seed, "split_seed": split_seed,
               "val_proportion": val_proportion, "val_images": len(val), "train_images": len(part),
               "num_classes": num_classes, "lr": recipe.lr, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
               "normalized": normalize}
    return metrics, details, logits.topk(min(5, logits.shape[1]), dim=1).indices


@TASKS.register("linear-probe", help="linear probe on frozen image features (CLIP_benchmark's recipe: weight-decay "
                "search on a split of train, refit on train+val): top-1, top-5, mean per-class recall")
class LinearProbe(ProbeTask):
    name = "linear-probe"
    options = LinearProbeOptions

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:
        options = options or self.options_of({})
        feats = split_features(backbone, data, ctx)
        recipe = fit_recipe(options, options["seed"])
        start = time.perf_counter()
        with preserved_rng(ctx.device):
            metrics, details, top = linear_probe(feats.train.features, feats.train.targets, feats.test.features,
                                                 feats.test.targets, recipe, options["val_proportion"],
                                                 options["split_seed"], device=ctx.device)
        seconds = time.perf_counter() - start
        details.update(splits=list(data.splits), features=feats.described, precision="fp32",
                       image_features=feats.cached, test_images=len(feats.test.indices))
        return TaskOutput(metrics=metrics, num_images=feats.num_images, skipped_images=feats.skipped_images,
                          model_seconds=feats.seconds, train_seconds=seconds, details=details,
                          samples=classification_samples(top.cpu().numpy(), feats.test.targets.numpy(),
                                                         feats.test.indices.numpy()),
                          training={"probe": Setup(recipe.batch_size, "fp32", ctx.device_type, 1)})
