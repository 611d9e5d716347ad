"""Image embedding extraction shared by the tasks: sharded over ranks, gathered back in dataset order."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from utabench.core.context import RunContext
from utabench.core.distributed import StridedBatchSampler, gather_rows
from utabench.datasets.gpu_decode import EncodedImageList, TensorTransform, collate_encoded, decode_batch
from utabench.datasets.images import ImageList, collate_skipping


@dataclass
class Features:
    features: torch.Tensor  # (n_kept, dim), float32, dataset order
    targets: torch.Tensor  # (n_kept,)
    indices: torch.Tensor  # (n_kept,) dataset indices of the rows; the rest were skipped corrupt images
    seconds: float  # wall time of the extraction loop on this rank
    cached: bool = False  # read from the feature cache (tasks/feature_cache.py)

    def skipped(self, total: int) -> int:
        return total - len(self.indices)


def extract(encode: Callable[[torch.Tensor], torch.Tensor], dataset: ImageList, ctx: RunContext,
            desc: str) -> Features:
    """Features of every image, in dataset order on every rank. With `ctx.decode == "gpu"` the loader yields file
    bytes and the batch is decoded and transformed on the device."""
    on_device = TensorTransform.of(dataset.transform) if ctx.decode == "gpu" else None
    loader = DataLoader(
        EncodedImageList(dataset) if on_device else dataset,
        batch_sampler=StridedBatchSampler(len(dataset), ctx.batch_size, ctx.dist), num_workers=ctx.workers,
        collate_fn=collate_encoded if on_device else collate_skipping, pin_memory=ctx.device_type == "cuda",
        persistent_workers=ctx.workers > 0, prefetch_factor=4 if ctx.workers > 0 else None,
    )
    feats, targets, indices = [], [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not (ctx.progress and ctx.dist.is_main), leave=False):
            if batch is not None and on_device:
                encoded, target, index = batch
                decoded = decode_batch(encoded, index, dataset, on_device, ctx.device)
                batch = None if decoded is None else (decoded[0], target[decoded[1]], index[decoded[1]])
            if batch is None:
                continue
            images, target, index = batch
            with ctx.autocast():
                out = encode(images.to(ctx.device, non_blocking=True))
            feats.append(out.float())  # kept on the device: no per-batch sync, the next batch is queued at once
            targets.append(target)
            indices.append(index)
    if feats:
        local = torch.cat(feats).cpu(), torch.cat(targets), torch.cat(indices)
    else:
        local = torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    seconds = time.perf_counter() - start
    index, features, target = gather_rows(ctx.dist, local[2], local[0], local[1])
    return Features(features=features, targets=target, indices=index, seconds=seconds)
