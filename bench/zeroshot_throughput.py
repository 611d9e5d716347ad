"""Zero-shot classification throughput, in one run on the same images: clip_benchmark, utabench with PIL decoding,
utabench with `--decode gpu` (CUDA only), and the model alone; images/s side by side with the ratios, and the top-1
of each path (GPU decoding changes pixels slightly: the difference against PIL is printed).

    python bench/zeroshot_throughput.py --backbone clip:ViT-B-16 --images 10000 --batch-size 256 --workers 16
    python bench/zeroshot_throughput.py --backbone clip:utabench-clip-tiny --images 256 --workers 2   # CPU smoke

Writes N synthetic 500x375 JPEGs in 10 class folders (like ImageNet val; smooth images, so that top-1 compares
decoders rather than noise), then times each tool end to end from a cold start: text classifier included (our caches
are emptied first, the feature cache is off), loader start-up included. The model-only rate runs encode_image on a
batch already on the device. Random weights (nothing is downloaded); precision auto (bf16 on CUDA).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import utabench  # noqa: F401  (torchvision shim)
from utabench.backbones import build_backbone
from utabench.core.context import RunContext, resolve_precision
from utabench.core.registry import DATASETS
from utabench.harness.plugins import load_all
from utabench.tasks.zeroshot_classification import ZeroShotClassification


def make_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500] / 500.0
    for i in range(n):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 6.28, 3)
        pixels = np.stack([np.sin(a + 7 * x), np.cos(b + 5 * y), np.sin(c + 3 * (x + y))], -1)
        pixels = (127.5 * (pixels + 1) + rng.normal(0, 4, pixels.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)


def model_only(backbone, ctx: RunContext, batches: int = 20) -> float:
    """images/s of encode_image alone on one batch already on the device (after 3 warm-up batches)."""
    size = backbone.info.input_size
    images = torch.randn(ctx.batch_size, 3, size, size, device=ctx.device)
    with torch.inference_mode():
        for i in range(3 + batches):
            if i == 3:
                if ctx.device_type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            with ctx.autocast():
                backbone.encode_image(images)
        if ctx.device_type == "cuda":
            torch.cuda.synchronize()
    return batches * ctx.batch_size / (time.perf_counter() - start)


def bench_arguments(description: str) -> argparse.Namespace:
    """The flags of the zero-shot throughput benches (this one and wds_throughput.py), parsed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backbone", default="clip:ViT-B-16")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "amp_bf16"])
    return parser.parse_args()


def main() -> None:
    args = bench_arguments(__doc__.splitlines()[0])
    load_all()
    from clip_benchmark.metrics import zeroshot_classification
    from torchvision.datasets import ImageFolder

    precision = resolve_precision(args.precision, torch.device(args.device).type)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        make_images(root, args.images)
        backbone = build_backbone(args.backbone).to(args.device).eval()
        data = DATASETS.get("imagefolder")({"root": str(root), "name": "bench"})
        ctx = RunContext(device=args.device, batch_size=args.batch_size, workers=args.workers, precision=precision,
                         cache_dir=Path(tmp) / "cache", progress=False, feature_cache=False)

        loader = torch.utils.data.DataLoader(ImageFolder(str(root), transform=backbone.image_transform()),
                                             batch_size=args.batch_size, num_workers=args.workers)
        start = time.perf_counter()
        theirs = zeroshot_classification.evaluate(backbone, loader, backbone.tokenize, data.classnames,
                                                  data.templates, torch.device(args.device).type,
                                                  amp=precision != "fp32")
        rows.append(("clip_benchmark", time.perf_counter() - start, 100 * theirs["acc1"]))
        paths = [("utabench (PIL)", ctx)]
        if ctx.device_type == "cuda":
            paths.append(("utabench (GPU decode)", replace(ctx, decode="gpu", cache_dir=Path(tmp) / "cache-gpu")))
        for name, run_ctx in paths:
            start = time.perf_counter()
            ours = ZeroShotClassification().run(backbone, data, run_ctx).metrics
            rows.append((name, time.perf_counter() - start, ours["top1"]))
        alone = model_only(backbone, ctx)

    n = args.images
    print(f"backbone {args.backbone}, {n} images, batch {args.batch_size}, {args.workers} workers, {args.device}, "
          f"{precision}")
    print(f"{'path':22s} {'seconds':>8s} {'images/s':>9s} {'x clip_benchmark':>17s} {'% of model':>11s} {'top-1':>7s}")
    base = n / rows[0][1]
    for name, seconds, top1 in rows:
        rate = n / seconds
        print(f"{name:22s} {seconds:8.2f} {rate:9.1f} {rate / base:17.2f} {100 * rate / alone:11.1f} {top1:7.2f}")
    print(f"{'model alone':22s} {'':8s} {alone:9.1f} {alone / base:17.2f} {100.0:11.1f}")
    if len(rows) == 3:
        print(f"top-1 GPU decode - PIL: {rows[2][2] - rows[1][2]:+.2f} points")


if __name__ == "__main__":
    main()
