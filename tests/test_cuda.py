"""CUDA-only checks, run by `bench/gpu_check.sh` on a GPU machine (skipped elsewhere): bf16 autocast against fp32 for
each adapter, NCCL on one GPU, `--decode gpu` against PIL on the world, and pretraining and LLaVA training steps in
bf16 through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import llava_entry

from utabench.backbones import build_backbone
from utabench.harness.cli import main

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu_check.sh runs these)")]

SPECS = ["clip:utabench-clip-tiny", "uta:tiny", "eva02:utabench-eva02-clip-tiny", "clip:ViT-B-16", "uta:B-16"]
BF16_COSINE = 0.99  # bf16 keeps 8 bits of mantissa: embeddings of random-weight models stay this close to fp32


@pytest.mark.parametrize("spec", SPECS)
def test_bf16_autocast_embeddings_are_close_to_fp32(spec):
    backbone = build_backbone(spec).cuda().eval()
    size = backbone.info.input_size
    images = torch.randn(8, 3, size, size, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    tokens = backbone.tokenize([f"a photo of shape {i}." for i in range(8)]).cuda()
    with torch.inference_mode():
        ref = backbone.encode_image(images).float(), backbone.encode_text(tokens).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = backbone.encode_image(images).float(), backbone.encode_text(tokens).float()
    for a, b in zip(ref, low):
        assert F.cosine_similarity(a, b, dim=-1).min().item() >= BF16_COSINE


def test_nccl_gather_and_ddp_step_on_one_gpu(tmp_path):
    script = """
import torch, torch.distributed as dist
from utabench.core.distributed import BACKENDS
torch.cuda.set_device(0)
dist.init_process_group(BACKENDS["cuda"])
for device in ("cpu", "cuda"):  # what gather_rows sends (CPU rows) and what DDP sends (CUDA gradients)
    parts = [torch.zeros(2, device=device)]
    dist.all_gather(parts, torch.arange(2.0, device=device))
    assert parts[0].tolist() == [0.0, 1.0], parts
box = [{"a": 1}]
dist.broadcast_object_list(box, src=0)
dist.barrier()
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2).cuda(), device_ids=[0])
model(torch.randn(3, 4, device="cuda")).sum().backward()
dist.all_reduce(torch.ones(1, device="cuda"))
dist.destroy_process_group()
print("nccl ok")
"""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "nccl ok" in out.stdout, out.stderr


def _top1(world, tmp_path, name, *flags):
    assert main(["run", "zeroshot-classification", "--backbone", "uta:tiny", "--dataset",
                 f"imagenet:{world / 'imagenet'}", "--classes", str(world / "classes.json"), "--results",
                 str(tmp_path / name), "--cache-dir", str(tmp_path / "cache"), "--device", "cuda", "--no-progress",
                 *flags]) == 0
    record = json.loads(next((tmp_path / name).rglob("imagenet.json")).read_text())
    return record["metrics"]["top1"], record


def test_decode_gpu_runs_and_stays_near_pil(world, tmp_path):
    pil, record = _top1(world, tmp_path, "pil")
    gpu, gpu_record = _top1(world, tmp_path, "gpu", "--decode", "gpu")
    assert record["provenance"]["evaluation"]["precision"] == "amp_bf16"
    assert gpu_record["provenance"]["evaluation"]["decode"] == "gpu"
    assert abs(gpu - pil) <= 25.0  # 4 images per class here: one image is 2.5 points; bench/ measures it at scale


def test_pretraining_step_in_bf16(world, tmp_path):
    cfg = {"objective": "uta", "student": {"model": "world"}, "teacher": {"spec": "uta:world"},
           "data": {"type": "imagefolder", "root": str(world / "imagenet" / "train")},
           "optim": {"batch_size": 4, "steps": 2, "warmup_steps": 1}, "workers": 0, "precision": "amp_bf16"}
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["pretrain", "uta", "--config", str(tmp_path / "student.yaml"), "--out", str(tmp_path / "out"),
                 "--device", "cuda", "--no-progress"]) == 0
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_llava_training_in_bf16(world, tmp_path):
    small = {"optim": {"batch_size": 4, "warmup_steps": 1}}  # the test world has 16 caption pairs
    entry = llava_entry(world, overrides={"stage1": small, "stage2": small, "generation": {"max_new_tokens": 6}})
    config = {"settings": {"device": "cuda"}, "backbones": ["uta:tiny"], "tasks": {"llava-bench": [entry]}}
    (tmp_path / "llava.yaml").write_text(yaml.safe_dump(config))
    assert main(["run-all", "--config", str(tmp_path / "llava.yaml"), "--results", str(tmp_path / "r"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    record = json.loads(next((tmp_path / "r").rglob("llava-bench.json")).read_text())
    assert record["status"] == "complete" and record["metrics"]
