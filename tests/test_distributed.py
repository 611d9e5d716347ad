"""Under torchrun (2 CPU processes, gloo; on one node, or as 2 nodes x 1 process over loopback) the data is sharded,
gathered, and the metrics equal a single process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from utabench.core.distributed import DistInfo, StridedBatchSampler, gather_rows


def test_strided_batches_cover_every_index_once():
    shards = [list(StridedBatchSampler(23, 4, DistInfo(rank, 3))) for rank in range(3)]
    flat = sorted(i for shard in shards for batch in shard for i in batch)
    assert flat == list(range(23))
    assert shards[0][0] == [0, 1, 2, 3] and shards[1][0] == [4, 5, 6, 7] and shards[0][1] == [12, 13, 14, 15]


def test_gather_single_process_sorts_by_index():
    index, rows = gather_rows(DistInfo(), torch.tensor([2, 0, 1]), torch.tensor([[20.0], [0.0], [10.0]]))
    assert index.tolist() == [0, 1, 2] and rows.flatten().tolist() == [0.0, 10.0, 20.0]


def _gather_with_an_empty_rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    if rank == 0:  # one batch in all: the other rank has no rows, and no feature width either
        local = torch.tensor([1, 0]), torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), torch.tensor([7, 8])
    else:
        local = torch.zeros(0, dtype=torch.long), torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    index, rows, targets = gather_rows(DistInfo(rank, 2), *local)
    torch.save({"index": index, "rows": rows, "targets": targets}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_gather_when_a_rank_has_no_rows(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gather_with_an_empty_rank, args=(port, str(tmp_path / "out")), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f"out.{rank}", weights_only=True)
        assert got["index"].tolist() == [0, 1] and got["targets"].tolist() == [8, 7]
        assert got["rows"].tolist() == [[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]


@pytest.mark.slow
def test_torchrun_two_processes_equal_single_process(tmp_path, world):
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "settings": {"device": "cpu", "batch_size": 8},
        "backbones": [{"name": "uta-tiny", "spec": "uta:tiny", "seed": 3}],
        "tasks": {
            "zeroshot-classification": [
                {"name": "imagenet-1k", "type": "imagenet", "root": str(world / "imagenet"),
                 "classes": str(world / "classes.json")},
                {"name": "objectnet", "type": "objectnet", "root": str(world / "objectnet")}],
            "retrieval": [{"name": "coco", "type": "coco", "root": str(world / "coco")}],
        },
    }))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "utabench.harness.cli", "run-all", "--config", str(config), "--threads", "1"]
    single = subprocess.run([sys.executable, *common, "--results", str(tmp_path / "one"), "--cache-dir",
                             str(tmp_path / "c1")], env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            *common, "--results", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c2")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = {p.relative_to(tmp_path / "one"): json.loads(p.read_text()) for p in (tmp_path / "one").rglob("*.json")}
    two = {p.relative_to(tmp_path / "two"): json.loads(p.read_text()) for p in (tmp_path / "two").rglob("*.json")}
    assert one.keys() == two.keys() and len(one) == 3
    for key in one:
        assert one[key]["metrics"] == two[key]["metrics"], key  # exactly equal
        assert two[key]["provenance"]["evaluation"]["world_size"] == 2
        assert one[key]["provenance"]["dataset"]["num_images"] == two[key]["provenance"]["dataset"]["num_images"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_loopback_equal_single_process(tmp_path, world):
    """What a multi-node job runs: one torchrun per node with --nnodes 2, --node_rank and the first node's address
    (results and cache directories shared, as on a cluster file system)."""
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "settings": {"device": "cpu", "batch_size": 4},
        "backbones": [{"name": "uta-tiny", "spec": "uta:tiny", "seed": 3}],
        "tasks": {"zeroshot-classification": [{"name": "imagenet-1k", "type": "imagenet", "root": str(world / "imagenet"),
                                               "classes": str(world / "classes.json")}]},
    }))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "utabench.harness.cli", "run-all", "--config", str(config), "--threads", "1", "--no-progress"]
    single = subprocess.run([sys.executable, *common, "--results", str(tmp_path / "one"), "--cache-dir",
                             str(tmp_path / "c1")], env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    port = _free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                               *common, "--results", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c2")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs[0][-3000:] + outputs[1][-3000:]
    one = json.loads(next((tmp_path / "one").rglob("imagenet-1k.json")).read_text())
    two = json.loads(next((tmp_path / "two").rglob("imagenet-1k.json")).read_text())
    assert one["metrics"] == two["metrics"] and two["provenance"]["evaluation"]["world_size"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["uta", "clip-ft"])
def test_torchrun_pretraining_equals_single_process(tmp_path, world, objective):
    """DDP over 2 ranks (half the batch each, gradients averaged) trains the same weights as one process: the
    distillation, and contrastive fine-tuning (open_clip's ClipLoss gathers both ranks' features with gradients)."""
    import yaml
    from safetensors.torch import load_file

    config = tmp_path / "pretrain.yaml"
    optim = {"batch_size": 8, "steps": 4, "warmup_steps": 1, "lr": 1e-3}
    config.write_text(yaml.safe_dump({
        "student": {"model": "world"}, "teacher": {"spec": "clip:utabench-clip-world", "seed": 1},
        "data": {"type": "imagefolder", "root": str(world / "imagenet" / "train")},
        "mask": {"type": "block-r", "ratio": 0.5, "min_block": 4}, "optim": optim, "workers": 0} if objective == "uta"
        else {"init": {"spec": "uta:world", "seed": 1}, "optim": optim, "workers": 0,
              "data": {"type": "webdataset", "shards": str(world / "pairs" / "pairs-*.tar")}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "utabench.harness.cli", "pretrain", objective, "--config", str(config), "--threads", "1",
              "--device", "cpu"]
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, two = load_file(tmp_path / "one" / "final.safetensors"), load_file(tmp_path / "two" / "final.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-4), key  # the weights move up to 3e-3 in these 4 steps
    assert json.loads((tmp_path / "two" / "final.json").read_text())["steps"] == 4
