"""Zero-shot image-text retrieval: text retrieval (image -> its captions) and image retrieval (caption -> its image)
recall@1/5/10, a hit when any positive is in the top k (the CLIP papers' and clip_benchmark's definition)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from utabench.core.distributed import StridedBatchSampler, gather_rows
from utabench.core.errors import NotApplicable
from utabench.core.registry import TASKS
from utabench.core.tablespec import PAPER_FILL, TableSpec, register_table
from utabench.datasets.images import ImageList
from utabench.tasks.base import Task, TaskOutput
from utabench.tasks.bootstrap import retrieval_samples
from utabench.tasks.feature_cache import image_features
from utabench.tasks.metrics import positive_ranks, retrieval_recall

KS = (1, 5, 10)


def encode_texts(backbone, texts, ctx) -> torch.Tensor:
    """Text embeddings of `texts` in order, batches sharded over ranks like the images."""
    sampler = StridedBatchSampler(len(texts), ctx.batch_size, ctx.dist)
    loader = DataLoader(list(range(len(texts))), batch_sampler=sampler)
    out, order = [], []
    with torch.inference_mode():
        for index in tqdm(loader, desc="captions", disable=not (ctx.progress and ctx.dist.is_main), leave=False):
            tokens = backbone.tokenize([texts[i] for i in index.tolist()]).to(ctx.device)
            with ctx.autocast():
                out.append(backbone.encode_text(tokens).float().cpu())
            order.append(index)
    local = (torch.cat(order), torch.cat(out)) if out else (torch.zeros(0, dtype=torch.long), torch.zeros(0, 0))
    return gather_rows(ctx.dist, *local)[1]


@TASKS.register("retrieval", help="zero-shot text/image retrieval R@1/5/10 (Table 2): Flickr30k, COCO Karpathy test")
class Retrieval(Task):
    name = "retrieval"
    cost = "evaluation"
    dataset_types = ("flickr30k", "coco", "wds")
    reads_kind = "retrieval"

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:
        if not backbone.zero_shot_ready:
            raise NotApplicable(f"{backbone.spec.key} has no joint image-text space with a text tower")
        images = ImageList([(path, i) for i, path in enumerate(data.images)], backbone.image_transform(),
                           ctx.skip_corrupt)
        feats = image_features(backbone, images, ctx, data.name)
        kept = feats.indices
        texts = [c for i in kept.tolist() for c in data.captions[i]]
        text_image = torch.tensor([i for i in kept.tolist() for _ in data.captions[i]])
        text_emb = F.normalize(encode_texts(backbone, texts, ctx), dim=-1)
        image_emb = F.normalize(feats.features, dim=-1)
        scores = text_emb @ image_emb.T  # (texts, images)
        positives = text_image[:, None] == kept[None, :]
        image_r = retrieval_recall(scores, positives, KS)
        text_r = retrieval_recall(scores.T, positives.T, KS)
        metrics = {f"text_r{k}": text_r[k] for k in KS} | {f"image_r{k}": image_r[k] for k in KS}
        # per text the rank of its image, per image the best rank of its texts (utabench/tasks/bootstrap.py)
        text_position = torch.tensor([p for p, i in enumerate(kept.tolist()) for _ in data.captions[i]],
                                     dtype=torch.long)
        samples = retrieval_samples(positive_ranks(scores, positives).numpy(), text_position.numpy(),
                                    positive_ranks(scores.T, positives.T).numpy(), kept.numpy())
        return TaskOutput(metrics=metrics, num_images=len(kept), skipped_images=feats.skipped(len(images)),
                          model_seconds=feats.seconds, samples=samples,
                          details={"num_texts": len(texts), "image_features": "cached" if feats.cached else "computed"})


register_table(TableSpec(
    2, "Table 2: zero-shot retrieval, recall (%)", "paper_table2.csv",
    tuple((f"{ds} {side} R@{k}", Retrieval.name, (ds.lower(),), f"{side}_r{k}") for side in ("text", "image")
          for ds in ("Flickr30k", "COCO") for k in KS),
    fill=PAPER_FILL,
))
