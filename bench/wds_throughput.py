"""Zero-shot classification on a CLIP_benchmark webdataset export, in one run on the same shards: clip_benchmark's
own wds loader and metric against utabench's `wds` set, images/s side by side with the ratio and both top-1s; then
the probes' cost with and without the feature cache (a linear probe and a kNN after the train and test features are
cached, against the first probe that encodes them).

    python bench/wds_throughput.py --backbone clip:ViT-B-16 --images 10000 --batch-size 256 --workers 16
    python bench/wds_throughput.py --backbone clip:utabench-clip-tiny --images 512 --workers 2   # CPU smoke

Writes N synthetic JPEGs (those of bench/zeroshot_throughput.py) as wds shards with clip_benchmark's own exporter
(test split, and a train split of the same size for the probes). Both zero-shot paths start cold (text classifier
included, our feature cache off); each tool reads the shards with its own loader (clip_benchmark: webdataset
streaming with `--workers` processes; utabench: the tar index and random access with the same workers).
Random weights (nothing is downloaded); precision auto (bf16 on CUDA).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from zeroshot_throughput import bench_arguments, make_images  # this script's folder is on sys.path

import utabench  # noqa: F401  (torchvision shim)
from utabench.backbones import build_backbone
from utabench.core.context import RunContext, resolve_precision
from utabench.core.registry import TASKS
from utabench.harness.plugins import load_all


class _Listed(list):
    classes = [f"class {i}" for i in range(10)]
    templates = ["a photo of a {c}.", "a rendering of the {c}."]


def export(root: Path, images: Path, split: str) -> None:
    from clip_benchmark.webdataset_builder import convert_dataset, path_to_bytes

    listed = _Listed((str(p), int(p.parent.name.split("_")[1])) for p in sorted(images.rglob("*.jpg")))
    convert_dataset(listed, split, str(root), transform=path_to_bytes, max_count=1000, verbose=False)


def main() -> None:
    args = bench_arguments(__doc__.splitlines()[0])
    load_all()
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification

    precision = resolve_precision(args.precision, torch.device(args.device).type)
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp) / "images", args.images)
        root = Path(tmp) / "wds_bench"
        for split in ("test", "train"):
            export(root, Path(tmp) / "images", split)
        backbone = build_backbone(args.backbone).to(args.device).eval()
        ctx = RunContext(device=args.device, batch_size=args.batch_size, workers=args.workers, precision=precision,
                         cache_dir=Path(tmp) / "cache", progress=False, feature_cache=False)
        entry = {"type": "wds", "root": str(root), "name": "bench"}

        theirs_data = build_dataset("wds/bench", root=str(root), transform=backbone.image_transform(), split="test")
        loader = torch.utils.data.DataLoader(theirs_data.batched(args.batch_size), batch_size=None,
                                             num_workers=args.workers)
        start = time.perf_counter()
        theirs = zeroshot_classification.evaluate(backbone, loader, backbone.tokenize, theirs_data.classes,
                                                  theirs_data.templates, torch.device(args.device).type,
                                                  amp=precision != "fp32")
        their_seconds = time.perf_counter() - start
        task = TASKS.get("zeroshot-classification")()
        start = time.perf_counter()
        ours = task.run(backbone, task.load(entry), ctx).metrics
        our_seconds = time.perf_counter() - start

        cached = replace(ctx, feature_cache=True)
        probes = []
        for name in ("knn", "linear-probe", "knn"):  # the first encodes train and test, the others read the cache
            probe = TASKS.get(name)()
            start = time.perf_counter()
            out = probe.run(backbone, probe.load(entry), cached, probe.options_of({}))
            probes.append((name, time.perf_counter() - start, out.metrics))

    n = args.images
    print(f"backbone {args.backbone}, {n} images, batch {args.batch_size}, {args.workers} workers, {args.device}, "
          f"{precision}")
    print(f"{'path':26s} {'seconds':>8s} {'images/s':>9s} {'x clip_benchmark':>17s} {'top-1':>7s}")
    for name, seconds, top1 in (("clip_benchmark (wds)", their_seconds, 100 * theirs["acc1"]),
                                ("utabench (wds)", our_seconds, ours["top1"])):
        print(f"{name:26s} {seconds:8.2f} {n / seconds:9.1f} {their_seconds / seconds:17.2f} {top1:7.2f}")
    print(f"probes on {n} train + {n} test images:")
    for (name, seconds, _), label in zip(probes, ("encodes train and test", "features from the cache",
                                                  "features from the cache")):
        print(f"  {name:14s} {seconds:8.2f} s  ({label})")


if __name__ == "__main__":
    main()
