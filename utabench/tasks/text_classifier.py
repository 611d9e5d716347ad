"""Zero-shot text classifiers (one normalised mean template embedding per class), cached on disk.

The cache key is sha256 of (text tower weights and tokenizer, class names, templates): any change to one of them
makes a new entry. Entries are safetensors files written atomically by rank 0; other ranks wait and read.
"""

from __future__ import annotations

import hashlib
import json
from typing import List, Optional

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from utabench.backbones.base import Backbone
from utabench.core.context import RunContext
from utabench.core.distributed import barrier
from utabench.core.io import atomic_write


def classifier_key(text_fingerprint: str, classnames: List[str], templates: List[str]) -> str:
    payload = json.dumps({"text": text_fingerprint, "classes": classnames, "templates": templates})
    return hashlib.sha256(payload.encode()).hexdigest()


GPU_PROMPTS_PER_BATCH = 2048  # prompts per text-tower forward on CUDA (whole classes: 25 classes x 80 templates)


def compute_classifier(backbone: Backbone, classnames: List[str], templates: List[str], ctx: RunContext,
                       classes_per_batch: Optional[int] = None) -> torch.Tensor:
    """(embed_dim, classes): per class, normalise each template's embedding, average, normalise again. By default
    many classes go through the text tower at once on CUDA; on CPU one class per forward, as it always was."""
    per_batch = classes_per_batch or (max(1, GPU_PROMPTS_PER_BATCH // len(templates))
                                      if ctx.device_type == "cuda" else 1)
    columns = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(classnames), per_batch), desc="text classifier",
                          disable=not (ctx.progress and ctx.dist.is_main), leave=False):
            names = classnames[start:start + per_batch]
            tokens = backbone.tokenize([t.format(c=name) for name in names for t in templates])
            with ctx.autocast():
                emb = backbone.encode_text(tokens.to(ctx.device, non_blocking=True))
            mean = F.normalize(emb.float(), dim=-1).view(len(names), len(templates), -1).mean(dim=1)
            columns.append(mean / mean.norm(dim=-1, keepdim=True))
    return torch.cat(columns).T.cpu()


def zero_shot_classifier(backbone: Backbone, classnames: List[str], templates: List[str], ctx: RunContext
                         ) -> torch.Tensor:
    key = classifier_key(backbone.text_fingerprint(), classnames, templates)
    path = ctx.cache_dir / "classifiers" / f"{key}.safetensors"
    if ctx.dist.is_main and not path.is_file():
        weights = compute_classifier(backbone, classnames, templates, ctx)
        atomic_write(path, lambda tmp: save_file({"weights": weights.contiguous()}, str(tmp),
                                                 metadata={"classes": str(len(classnames))}))
    barrier(ctx.dist)
    return load_file(str(path))["weights"]
