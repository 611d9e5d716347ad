"""Pretraining throughput: one UTA step against one MIM (EVA-style) step, same student, teacher and batch, one run.

A step is the full training step: the frozen teacher's forward, the student's forward and backward, gradient
clipping and the AdamW update. Images are random tensors already on the device (data loading is not measured);
masks come from the configured generator. FLOPs are counted with torch's FLOP counter; MFU = achieved FLOP/s over
the device's peak (`--peak-tflops`, default 989 for an H100's dense bf16; on a CPU pass your own or get FLOP/s only).

    python bench/pretrain_throughput.py --student B-14 --teacher clip:EVA01-g-14-plus --batch-size 128 --device cuda
    python bench/pretrain_throughput.py --student tiny --teacher clip:utabench-clip-tiny --batch-size 32   # CPU smoke
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
from utabench.harness.plugins import load_all
from utabench.pretrain.config import build_config
from utabench.pretrain.flops import step_flops
from utabench.pretrain.run import build_recipe
from utabench.training.optim import param_groups


def measure(objective: str, args, folder: Path) -> dict:
    cfg = build_config({"objective": objective, "student": {"model": args.student}, "teacher": {"spec": args.teacher},
                        "data": {"type": "imagefolder", "root": str(folder)}, "mask": {"ratio": args.ratio},
                        "optim": {"batch_size": 4}, "workers": 0, "precision": args.precision})
    recipe = build_recipe(cfg, args.device, None)
    flops = step_flops(recipe, batch_size=4, device=args.device)
    module = recipe.module.to(args.device).train()
    optimizer = torch.optim.AdamW(param_groups(module, 0.05), lr=1e-4, fused=args.device.startswith("cuda"))
    size = recipe.image_size
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(np.stack([recipe.masks(rng) for _ in range(args.batch_size)])) if recipe.masks else None
    batch = {"image": torch.rand(args.batch_size, 3, size, size, device=args.device)}
    if masks is not None:
        batch["mask"] = masks.to(args.device)
    amp = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.precision == "amp_bf16")

    def step():
        with amp:
            loss = recipe.loss(module, batch, torch.device(args.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 3.0)
        optimizer.step()

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    achieved = flops["total_per_image"] * args.batch_size / seconds
    return {"images_per_second": args.batch_size / seconds, "step_ms": 1000 * seconds,
            "gflops_per_image": flops["total_per_image"] / 1e9, "tflops_per_second": achieved / 1e12,
            "mfu": achieved / (args.peak_tflops * 1e12) if args.peak_tflops else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="B-14", help="uta model config")
    parser.add_argument("--teacher", default="clip:EVA01-g-14-plus", help="teacher backbone spec (random weights)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "amp_bf16"], default=None)
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak (H100 dense bf16: 989)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.device.startswith("cuda")
    args.precision = args.precision or ("amp_bf16" if on_gpu else "fp32")
    if args.peak_tflops is None and on_gpu and "H100" in torch.cuda.get_device_name():
        args.peak_tflops = 989.0
    load_all()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(4):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(f"{tmp}/{i}.png")
        results = {objective: measure(objective, args, Path(tmp)) for objective in ("uta", "mim")}
    print(f"student uta:{args.student}, teacher {args.teacher}, batch {args.batch_size}, mask ratio {args.ratio}, "
          f"{args.precision} on {args.device}")
    print(f"{'step':6s} {'images/s':>10s} {'ms/step':>9s} {'GFLOPs/img':>11s} {'TFLOP/s':>8s} {'MFU':>6s}")
    for name, r in results.items():
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "—"
        print(f"{name:6s} {r['images_per_second']:10.1f} {r['step_ms']:9.1f} {r['gflops_per_image']:11.2f} "
              f"{r['tflops_per_second']:8.3f} {mfu:>6s}")
    print(f"UTA / MIM images/s: {results['uta']['images_per_second'] / results['mim']['images_per_second']:.2f}x "
          f"(goal >= 1.5x, teacher included)")


if __name__ == "__main__":
    main()
