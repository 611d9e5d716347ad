"""Image features kept on disk beside the text classifiers, so that rerunning a table with other templates or class
names, or after a crash, does not encode the images again.

An entry is keyed by sha256 of: the backbone's weights fingerprint (class, spec, every tensor), the eval transform,
the images' contents and targets in order, precision, device type, how pixels are decoded, and whether corrupt images
are skipped. Anything else that changes the features changes one of those. Entries are safetensors written atomically
by rank 0 after the gather, so a crash leaves the old entry or none; an entry that cannot be read is computed again.
`--no-feature-cache` neither reads nor writes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from utabench.core.context import RunContext
from utabench.core.distributed import barrier, broadcast
from utabench.core.fingerprint import fingerprint
from utabench.core.io import atomic_write
from utabench.datasets.images import ImageList, TarMember, source_files
from utabench.tasks.features import Features, extract


def feature_key(backbone, images: ImageList, ctx: RunContext) -> str:
    """The cache key of `backbone`'s features of `images` under `ctx` (see the module docstring)."""
    paths = [path for path, _ in images.samples]
    if any(isinstance(path, TarMember) for path in paths):  # images in shards: the shards, and which member is which
        order = json.dumps([[str(path), int(t)] for path, t in images.samples]).encode()
    else:
        order = json.dumps([int(t) for _, t in images.samples]).encode()
    contents = fingerprint(Path("/"), source_files(paths), order, ctx.cache_dir, images.skip_corrupt)
    payload = {"weights": backbone.weights_fingerprint(), "transform": repr(images.transform), "images": contents,
               "precision": ctx.precision, "device": ctx.device_type, "decode": ctx.decode,
               "skip_corrupt": images.skip_corrupt}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read(path: Path) -> Optional[Features]:
    try:
        stored = load_file(str(path))
        return Features(features=stored["features"], targets=stored["targets"], indices=stored["indices"],
                        seconds=0.0, cached=True)
    except (OSError, SafetensorError, KeyError):
        return None  # unreadable (a disk fault, a foreign file): computed again and replaced


def image_features(backbone, images: ImageList, ctx: RunContext, desc: str) -> Features:
    """`backbone.encode_image` over `images`, from the cache when an entry exists."""
    if not ctx.feature_cache:
        return extract(backbone.encode_image, images, ctx, desc)
    path = ctx.cache_dir / "features" / f"{feature_key(backbone, images, ctx)}.safetensors"
    found = _read(path) if ctx.dist.is_main and path.is_file() else None
    if broadcast(ctx.dist, found is not None):
        barrier(ctx.dist)
        return found if ctx.dist.is_main else _read(path)
    feats = extract(backbone.encode_image, images, ctx, desc)
    if ctx.dist.is_main:
        tensors = {"features": feats.features.contiguous(), "targets": feats.targets.contiguous(),
                   "indices": feats.indices.contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"backbone": backbone.spec.key,
                                                                             "images": str(len(images))}))
    barrier(ctx.dist)
    return feats
