"""The probes: linear-probe against CLIP_benchmark's own `evaluate` on the same features, split and seed; kNN against
a written-out DINOv2 definition; few-shot's selection against CLIP_benchmark's walk; the train / test splits of a
dataset entry; the feature cache shared by the probes; an image-only backbone; a complete record through the CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from utabench.backbones import build_backbone
from utabench.core.errors import NotApplicable, UtabenchError
from utabench.core.registry import TASKS
from utabench.harness.cli import main
from utabench.tasks.bootstrap import point_metrics
from utabench.tasks.few_shot import few_shot_indices, few_shot_probe
from utabench.tasks.knn import knn_classify, knn_scores
from utabench.tasks.linear_probe import WD_GRID, FitRecipe, carve_validation, cosine_lr, linear_probe


@pytest.fixture(autouse=True)
def one_thread():
    """The probes' steps are tiny: on shared cores one thread is several times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clusters(n_train, n_test, dim, classes, seed, noise=1.5):
    """Train and test rows of the same noisy class centres: (train_x, train_y, test_x, test_y)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    y = torch.arange(n_train + n_test) % classes
    x = centres[y] + noise * torch.randn(len(y), dim, generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _cpu_only_cuda(monkeypatch):
    """CLIP_benchmark's probe calls `.cuda()`, `.to("cuda")` and asserts device == "cuda": run it on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    to = torch.Tensor.to

    def to_cpu(self, *args, **kwargs):
        if args and str(args[0]).startswith("cuda"):
            return self
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to_cpu)


def test_cosine_schedule_is_clip_benchmarks():
    from clip_benchmark.metrics.linear_probe import cosine_lr as theirs

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    adjust = theirs(optimizer, 0.1, 0.0, 30)
    for step in range(30):
        adjust(step)
        assert optimizer.param_groups[0]["lr"] == cosine_lr(0.1, step, 30)


def test_linear_probe_equals_clip_benchmark_on_the_same_features(tmp_path, monkeypatch):
    """CLIP_benchmark's `evaluate` (its weight-decay search with --val_proportion, refit on train+val) on the
    features of our split. Its only data difference is the randperm it walks over the train part (global RNG):
    the stored rows are pre-permuted so that its walk gives back our order; then every fit sees the same rows, init
    and shuffles, and the chosen weight decay and top-1 are equal."""
    from clip_benchmark.metrics import linear_probe as cb

    train_x, train_y, test_x, test_y = _clusters(150, 90, 12, 6, seed=0, noise=2.5)
    recipe = FitRecipe(lr=0.1, epochs=3, batch_size=16, seed=3)
    ours, details, _ = linear_probe(train_x, train_y, test_x, test_y, recipe, val_proportion=0.2, split_seed=5)

    normal = torch.nn.functional.normalize
    part, val = carve_validation(len(train_x), 0.2, 5)
    walk_seed = 11
    perm = torch.randperm(len(part), generator=torch.Generator().manual_seed(walk_seed))
    stored_x, stored_y = torch.empty(len(part), 12), torch.empty(len(part), dtype=torch.long)
    stored_x[perm], stored_y[perm] = normal(train_x[part], dim=-1), train_y[part]  # stored[perm] == our order
    features = tmp_path / "features" / "model"
    features.mkdir(parents=True)
    for split, x, y in (("train", stored_x, stored_y), ("val", normal(train_x[val], dim=-1), train_y[val]),
                        ("test", normal(test_x, dim=-1), test_y)):
        torch.save(x, features / f"features_{split}.pt")
        torch.save(y, features / f"targets_{split}.pt")
    _cpu_only_cuda(monkeypatch)
    torch.manual_seed(walk_seed)  # the global generator's randperm is then `perm`
    theirs = cb.evaluate(torch.nn.Identity(), [None], [None], fewshot_k=-1, batch_size=16, num_workers=0, lr=0.1,
                         epochs=3, model_id="model", seed=3, feature_root=str(tmp_path / "features"), device="cuda",
                         val_dataloader=[None], normalize=True, amp=False)
    assert theirs["weight_decay"] == details["weight_decay"] == float(WD_GRID[details["weight_decay_index"]])
    assert abs(100 * theirs["lp_acc1"] - ours["top1"]) <= 1e-4
    assert abs(100 * theirs["lp_mean_per_class_recall"] - ours["mean_per_class_recall"]) <= 1e-4
    assert abs(100 * theirs["lp_acc5"] - ours["top5"]) <= 1e-4
    assert details["fits"] < 19 + 1 and len(details["candidates"]) == details["fits"] - 1  # repeats fitted once
    assert 20 < ours["top1"] < 100  # a probe that learns (a constant 0 or 100 would prove little)
    assert details["weight_decay_index"] % 16 != 0  # found by the refinements, not in the first seven


def test_weight_decay_search_keeps_clip_benchmarks_tie_rules():
    """find_peak: the first strictly best candidate; when every candidate scores 0, index 0 (not the peak)."""
    from utabench.tasks import linear_probe as lp

    def run(accuracies):
        fits = []

        def fake_fit(x, y, classes, wd, recipe, device="cpu"):
            index = int(np.argmin(np.abs(WD_GRID - wd)))
            fits.append(index)
            return index

        original = (lp.fit_linear, lp.predict, lp.topk_accuracy)
        lp.fit_linear, lp.predict = fake_fit, (lambda model, x: model)
        lp.topk_accuracy = lambda index, y, ks: {1: accuracies(index)}
        try:
            return lp.search_weight_decay(None, None, None, None, 2, FitRecipe())[0], fits
        finally:
            lp.fit_linear, lp.predict, lp.topk_accuracy = original

    assert run(lambda i: 0.0)[0] == 0
    peak, fits = run(lambda i: 50.0)  # all equal: the first listed wins at every step
    assert peak == 0 and fits[:7] == [0, 16, 32, 48, 64, 80, 96] and len(set(fits)) == len(fits)
    assert run(lambda i: 100.0 - abs(i - 45))[0] == 45  # a single peak is found exactly
    assert run(lambda i: 10.0 if i >= 70 else 0.0)[0] == 70  # 80, then 72 (left ties win), 72, 70, 70


def _knn_reference(train_x, train_y, test_x, ks, temperature, classes):
    """DINOv2's kNN written out in float64, one query at a time, neighbours ordered by (-similarity, index)."""
    train = torch.nn.functional.normalize(train_x.double(), dim=-1).numpy()
    out = {k: np.zeros((len(test_x), classes)) for k in ks}
    for q, query in enumerate(torch.nn.functional.normalize(test_x.double(), dim=-1).numpy()):
        sims = train @ query
        order = sorted(range(len(train)), key=lambda j: (-sims[j], j))[:min(max(ks), len(train))]
        weights = np.exp(sims[order] / temperature)
        weights /= weights.sum()
        for k in ks:
            for i in range(min(k, len(order))):
                out[k][q, int(train_y[order[i]])] += weights[i]
    return out


def test_knn_equals_the_written_out_definition():
    train_x, train_y, test_x, test_y = _clusters(300, 50, 16, 7, seed=2, noise=2.0)
    ks = [1, 10, 20, 100, 200, 400]  # 400 > 300 training rows: all of them
    expected = _knn_reference(train_x, train_y, test_x, ks, 0.07, 7)
    normal = torch.nn.functional.normalize
    got = knn_scores(normal(train_x, dim=-1), train_y, normal(test_x, dim=-1), ks, 0.07, 7)
    for k in ks:
        assert np.abs(got[k].double().numpy() - expected[k]).max() <= 1e-6, k
    metrics = knn_classify(train_x, train_y, test_x, test_y, ks, 0.07, chunk=16)
    for k in ks:
        ranking = np.argsort(-expected[k], axis=1, kind="stable")
        hits = ranking == test_y.numpy()[:, None]
        assert metrics[f"top1_k{k}"] == pytest.approx(100 * hits[:, 0].mean(), abs=1e-9)
        assert metrics[f"top5_k{k}"] == pytest.approx(100 * hits[:, :5].any(1).mean(), abs=1e-9)
    assert 30 < metrics["top1_k20"] < 100


def test_knn_breaks_ties_by_training_row_then_class():
    """Equal similarities: the earlier training row is the nearer neighbour, whatever topk would return."""
    base = torch.randn(1, 8)
    train_x = torch.cat([base.repeat(6, 1), -base])  # six identical rows, labels 3 2 1 0 1 2
    train_y = torch.tensor([3, 2, 1, 0, 1, 2, 4])
    scores = knn_scores(torch.nn.functional.normalize(train_x, dim=-1), train_y,
                        torch.nn.functional.normalize(base, dim=-1), [1, 2, 3], 0.07, 5)
    assert scores[1].argmax() == 3 and scores[1][0, 3] > 0 and scores[1].count_nonzero() == 1
    assert set(scores[2].nonzero()[:, 1].tolist()) == {3, 2}
    assert set(scores[3].nonzero()[:, 1].tolist()) == {3, 2, 1}
    metrics = knn_classify(train_x, train_y, base, torch.tensor([2]), [2])  # 3 and 2 tie: class 2 ranks first
    assert metrics["top1_k2"] == 100.0


def test_few_shot_selection_is_clip_benchmarks_walk():
    targets = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(0))
    for k, seed in ((1, 0), (4, 1), (16, 2)):
        perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
        counts, expected = {}, []
        for p in perm.tolist():  # CLIP_benchmark's loop (linear_probe.py, evaluate)
            c = int(targets[p])
            counts.setdefault(c, 0)
            if counts[c] < k:
                counts[c] += 1
                expected.append(p)
        rows, lacking = few_shot_indices(targets, k, seed)
        assert rows.tolist() == expected and lacking == []
    one, _ = few_shot_indices(targets, 1, 7)
    two, _ = few_shot_indices(targets, 2, 7)
    assert set(one.tolist()) <= set(two.tolist())  # nested for one seed
    small = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    assert few_shot_indices(small, 3, 0)[1] == [1]


def test_few_shot_probe_means_over_seeds_and_leaves_out_what_cannot_be_filled():
    train_x, train_y, test_x, test_y = _clusters(60, 40, 8, 4, seed=4, noise=0.5)  # 15 training images a class
    options = {"shots": [1, 4, 16], "seeds": [0, 1, 2], "lr": 0.1, "epochs": 5, "fit_batch_size": 64,
               "weight_decay": 0.0, "wd_search": False, "val_proportion": 0.2}
    metrics, details, hits = few_shot_probe(train_x, train_y, test_x, test_y, options)
    assert set(metrics) == {"top1_k1", "top1_k1_std", "top1_k4", "top1_k4_std"} and set(hits) == {"top1_k1", "top1_k4"}
    assert 100 * hits["top1_k4"].mean() == pytest.approx(metrics["top1_k4"])  # the seeds' mean hit per test image
    assert set(np.unique(hits["top1_k4"] * 3).round(9)) <= {0, 1, 2, 3} and len(hits["top1_k4"]) == len(test_y)
    by_seed = list(details["top1_by_seed"]["k4"].values())
    assert metrics["top1_k4"] == pytest.approx(np.mean(by_seed))
    assert metrics["top1_k4_std"] == pytest.approx(np.std(by_seed, ddof=1))
    assert details["insufficient"] == {"k16": [0, 1, 2, 3]} and metrics["top1_k4"] > 50
    searched, details, _ = few_shot_probe(train_x, train_y, test_x, test_y, {**options, "shots": [2], "seeds": [0],
                                                                          "wd_search": True})
    assert set(details["weight_decay"]) == {"k2_seed0"} and "top1_k2" in searched


def _entry(world, **more):
    return {"name": "imagenet", "type": "imagenet", "root": str(world / "imagenet"),
            "classes": str(world / "classes.json"), **more}


def test_a_second_probe_reads_the_cached_features_and_encodes_nothing(world, ctx, monkeypatch):
    backbone = build_backbone("uta:tiny")
    knn, probe = TASKS.get("knn")(), TASKS.get("linear-probe")()
    data = knn.load(_entry(world))
    assert len(data.train.samples) == 40 and len(data.test.samples) == 40 and data.splits == ("train", "val")
    first = knn.run(backbone, data, ctx, knn.options_of({"ks": "1,5"}))
    assert first.details["image_features"] == "computed" and set(first.metrics) == {
        "top1_k1", "top1_k5", "top5_k1", "top5_k5"}
    assert point_metrics(first.samples) == first.metrics  # its per-image hits, for the record's intervals
    assert sorted(first.samples["ids"]) == list(range(40))  # the test split's images

    def no_encoding(images):
        raise AssertionError("an image was encoded again")

    monkeypatch.setattr(backbone, "encode_image", no_encoding)
    second = probe.run(backbone, probe.load(_entry(world)), ctx, probe.options_of({"epochs": 1}))
    assert second.details["image_features"] == "cached" and second.model_seconds == 0.0
    assert {"top1", "top5", "mean_per_class_recall"} == set(second.metrics)


def test_an_image_only_backbone_is_probed(world, ctx):
    backbone = build_backbone({"spec": "eva02:eva02_tiny_patch14_224", "image_size": 56})
    assert not backbone.zero_shot_ready
    task = TASKS.get("knn")()
    with pytest.raises(NotApplicable):
        backbone.encode_image(torch.zeros(1, 3, 56, 56))
    out = task.run(backbone, task.load(_entry(world)), ctx, task.options_of({"ks": [3]}))
    assert 0 <= out.metrics["top1_k3"] <= 100 and out.num_images == 80
    assert out.details["features"].startswith("vision tower output")


def test_splits_of_a_dataset_entry(world, tmp_path):
    task = TASKS.get("linear-probe")()
    with pytest.raises(UtabenchError, match="ROOT/train and ROOT/test"):
        task.load(_entry(world, test_split="test"))
    with pytest.raises(UtabenchError, match="both 'train'"):
        task.load(_entry(world, test_split="train"))
    root = tmp_path / "folders"  # ImageFolder splits with other folder sets: labels follow the folder names
    shutil.copytree(world / "imagenet" / "train", root / "fit")
    shutil.copytree(world / "imagenet" / "val", root / "eval")
    shutil.rmtree(root / "eval" / "n90000000")
    data = task.load({"type": "imagefolder", "root": str(root), "train_split": "fit", "test_split": "eval"})
    by_folder = {p.parent.name: y for p, y in data.test.samples}
    assert by_folder == {name: i for i, name in enumerate(data.train.class_ids) if name != "n90000000"}
    assert len(data.files) == 40 + 36 and b"train:fit" in data.extra
    shutil.copytree(world / "imagenet" / "val" / "n90000000", root / "eval" / "extra")
    with pytest.raises(UtabenchError, match="classes the train split lacks: extra"):
        task.load({"type": "imagefolder", "root": str(root), "train_split": "fit", "test_split": "eval"})


def test_linear_probe_through_the_cli_writes_a_complete_record(world, tmp_path):
    results = tmp_path / "r"
    args = ["run", "linear-probe", "--backbone", "uta:tiny", "--dataset", f"imagenet:{world / 'imagenet'}",
            "--classes", str(world / "classes.json"), "--epochs", "2", "--seed", "1", "--val-proportion", "0.25",
            "--results", str(results), "--cache-dir", str(tmp_path / "cache"), "--threads", "2", "--no-progress"]
    assert main(args) == 0
    record = json.loads(next(results.glob("*/linear-probe/imagenet.json")).read_text())
    assert record["status"] == "complete" and {"top1", "top5", "mean_per_class_recall"} == set(record["metrics"])
    details = record["provenance"]["task_details"]
    assert details["seed"] == 1 and details["val_proportion"] == 0.25 and details["val_images"] == 10
    assert details["weight_decay"] in [c["weight_decay"] for c in details["candidates"]]
    assert all(0 <= c["val_top1"] <= 100 for c in details["candidates"]) and details["epochs"] == 2
    assert record["provenance"]["dataset"]["fingerprint"] and math.isfinite(record["metrics"]["top1"])


def _wds_export(world, root):
    """The world's imagenet train / val as a CLIP_benchmark wds export with train and test splits."""
    import io
    import tarfile

    wnids = [wnid for wnid, _ in json.loads((world / "classes.json").read_text())]
    root.mkdir()
    (root / "classnames.txt").write_text("".join(f"{name}\n" for _, name in json.loads(
        (world / "classes.json").read_text())))
    for split, folder in (("train", "train"), ("test", "val")):
        (root / split).mkdir()
        (root / split / "nshards.txt").write_text("1")
        with tarfile.open(root / split / "0.tar", "w") as tar:
            for i, path in enumerate(sorted((world / "imagenet" / folder).rglob("*.JPEG"))):
                for ext, data in (("jpg", path.read_bytes()), ("cls", str(wnids.index(path.parent.name)).encode())):
                    info = tarfile.TarInfo(f"s{i:07d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_a_wds_export_is_probed_as_its_folders_are(world, ctx, tmp_path):
    if "wds" not in TASKS.get("knn").dataset_types:
        pytest.skip("no wds dataset type registered")
    _wds_export(world, tmp_path / "wds")
    task, backbone = TASKS.get("knn")(), build_backbone("uta:tiny")
    data = task.load({"type": "wds", "root": str(tmp_path / "wds")})
    assert data.splits == ("train", "test") and len(data.train.samples) == len(data.test.samples) == 40
    options = task.options_of({"ks": [1, 5]})
    shards = task.run(backbone, data, ctx, options).metrics
    assert shards == task.run(backbone, task.load(_entry(world)), ctx, options).metrics


def test_a_linear_probe_record_has_its_intervals(world, tmp_path):
    results = tmp_path / "r"
    assert main(["run", "linear-probe", "--backbone", "uta:tiny", "--dataset", f"imagenet:{world / 'imagenet'}",
                 "--classes", str(world / "classes.json"), "--epochs", "1", "--results", str(results),
                 "--cache-dir", str(tmp_path / "cache"), "--threads", "1", "--no-progress"]) == 0
    record = json.loads(next(results.rglob("imagenet.json")).read_text())
    for metric in ("top1", "top5", "mean_per_class_recall"):
        low, high = record["ci"][metric]
        assert low <= record["metrics"][metric] <= high
    assert record["provenance"]["samples"]["file"] == "imagenet.samples.npz"
