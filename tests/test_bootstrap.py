"""Bootstrap intervals from per-sample outcomes (utabench/tasks/bootstrap.py): against a written-out bootstrap, around
the point estimate, paired comparisons, the ranks retrieval keeps, and the CLI from `run` to `tables --compare`."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from utabench.core.errors import UtabenchError
from utabench.harness.cli import main
from utabench.harness.record import Record
from utabench.harness.store import read_record, record_path
from utabench.tasks import bootstrap
from utabench.tasks.bootstrap import (
    bootstrap_ci,
    classification_samples,
    hits_samples,
    load_samples,
    multilabel_samples,
    paired_delta,
    point_metrics,
    retrieval_samples,
    samples_file,
)
from utabench.tasks.metrics import mean_per_class_recall, positive_ranks, retrieval_recall, topk_accuracy

torch.set_num_threads(2)


def _classification(n=97, classes=7, seed=0, right=0.6):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    top = np.stack([rng.permutation(classes)[:5] for _ in range(n)])
    correct = rng.random(n) < right
    top[correct, 0] = target[correct]
    top[correct, 1:] = np.where(top[correct, 1:] == target[correct, None], (target[correct, None] + 1) % classes,
                                top[correct, 1:])
    return classification_samples(top, target, np.arange(n) * 3)


def _retrieval(images=23, seed=0):
    rng = np.random.default_rng(seed)
    per_image = rng.integers(1, 6, images)  # 1-5 texts an image, as Flickr / COCO have 5 (some fewer)
    text_image = np.repeat(np.arange(images), per_image)
    return retrieval_samples(rng.integers(0, 12, len(text_image)), text_image, rng.integers(0, 30, images),
                             np.arange(images) + 100)


def _written_out(samples, statistic, resamples=1000, seed=0):
    """The bootstrap as its docstring states it, one resample at a time."""
    rng = np.random.default_rng(seed)
    n = len(samples["ids"])
    stats = [statistic(rng.integers(0, n, size=n)) for _ in range(resamples)]
    low, high = np.percentile(stats, [2.5, 97.5])
    return [float(low), float(high)]


def test_intervals_equal_a_written_out_bootstrap(monkeypatch):
    samples = _classification()
    top, target, n = samples["top5"], samples["target"], len(samples["ids"])

    def mean_recall(index):
        t, hit = target[index], top[index, 0] == target[index]
        return 100.0 * np.mean([hit[t == c].sum() / (t == c).sum() for c in np.unique(t)])

    expected = {
        "top1": _written_out(samples, lambda i: 100.0 * int((top[i, 0] == target[i]).sum()) / n),
        "top5": _written_out(samples, lambda i: 100.0 * int((top[i] == target[i, None]).any(1).sum()) / n),
    }
    monkeypatch.setattr(bootstrap, "CHUNK_VALUES", 7 * n)  # several batches of resamples: the same rows
    ci = bootstrap_ci(samples)
    assert {m: ci[m] for m in expected} == expected  # exactly
    assert ci["mean_per_class_recall"] == pytest.approx(_written_out(samples, mean_recall), rel=1e-12)

    texts = _retrieval()
    rank, owner, best = texts["text_rank"], texts["text_image"], texts["image_rank"]

    def image_r(k):
        def stat(index):  # each drawn image carries all its texts
            mine = np.concatenate([rank[owner == i] for i in index])
            return 100.0 * int((mine < k).sum()) / len(mine)
        return stat

    got = bootstrap_ci(texts)
    for k in (1, 5, 10):
        assert got[f"image_r{k}"] == _written_out(texts, image_r(k))
        assert got[f"text_r{k}"] == _written_out(texts, lambda i, k=k: 100.0 * int((best[i] < k).sum()) / len(i))
    assert bootstrap_ci(samples, seed=1) != ci  # seeded: another seed, other resamples


def test_datacomp_metrics_intervals_equal_a_written_out_bootstrap():
    """Macro F1 as sklearn counts it and the worst group's top-1 / top-5, each resample written out."""
    from sklearn.metrics import f1_score

    base = _classification(n=89, classes=6, seed=2, right=0.5)
    group = np.random.default_rng(2).choice([3, 7, 11], size=89, p=[0.6, 0.3, 0.1])
    samples = classification_samples(base["top5"], base["target"], base["ids"], group)
    top, target = samples["top5"], samples["target"]

    def f1(index):
        return 100.0 * f1_score(target[index], top[index, 0], average="macro", labels=np.unique(target[index]))

    def worst(k):
        def stat(index):
            hit, g = (top[index, :k] == target[index, None]).any(1), group[index]
            return 100.0 * min(hit[g == v].mean() for v in np.unique(g))
        return stat

    got = bootstrap_ci(samples, ["f1_macro", "top1_worst_group", "top5_worst_group"], resamples=300)
    assert got["f1_macro"] == pytest.approx(_written_out(samples, f1, resamples=300), rel=1e-12)
    assert got["top1_worst_group"] == pytest.approx(_written_out(samples, worst(1), resamples=300), rel=1e-12)
    assert got["top5_worst_group"] == pytest.approx(_written_out(samples, worst(5), resamples=300), rel=1e-12)
    everything = np.arange(89)
    assert point_metrics(samples, list(got)) == pytest.approx({"f1_macro": f1(everything),
                                                               "top1_worst_group": worst(1)(everything),
                                                               "top5_worst_group": worst(5)(everything)})
    assert "top1_worst_group" not in bootstrap_ci(base)  # no groups kept: no worst group


def test_hits_intervals_equal_a_written_out_bootstrap_of_the_mean_hit():
    """kNN's 0/1 hits and few-shot's hits averaged over 3 seeds: the metric is the mean hit, resampled over images."""
    rng = np.random.default_rng(3)
    knn, seeds = rng.random(83) < 0.7, (rng.random((3, 83)) < 0.55).mean(axis=0)
    samples = hits_samples({"top1_k10": knn, "top1_k4": seeds}, np.arange(83) + 7)
    got = bootstrap_ci(samples)
    assert got == {"top1_k10": _written_out(samples, lambda i: 100.0 * knn[i].sum() / 83),
                   "top1_k4": pytest.approx(_written_out(samples, lambda i: 100.0 * seeds[i].sum() / 83), rel=1e-12)}
    assert point_metrics(samples) == {"top1_k10": 100.0 * knn.sum() / 83, "top1_k4": pytest.approx(100 * seeds.mean())}
    assert bootstrap_ci(samples, ["top1_k10", "top1_k10_std"]).keys() == {"top1_k10"}  # a std has no interval
    deltas = paired_delta(samples, {k: v.copy() for k, v in samples.items()})
    assert all(d["delta"] == 0 and (d["low"], d["high"]) == (0, 0) for d in deltas.values()) and len(deltas) == 2


def test_multilabel_intervals_equal_a_written_out_bootstrap_of_clip_benchmarks_map():
    """Each resample's mean average precision as clip_benchmark computes it (average_precision_per_class)."""
    from clip_benchmark.metrics.zeroshot_classification import average_precision_per_class

    rng = np.random.default_rng(5)
    hot = rng.random((61, 6)) < 0.3
    scores = (rng.normal(size=(61, 6)) + 1.5 * hot).astype(np.float32)
    samples = multilabel_samples(scores, hot, np.arange(61))

    def theirs(index):
        ap = average_precision_per_class(torch.from_numpy(scores[index]), torch.from_numpy(hot[index]).long())
        return 100.0 * float(ap.mean())

    got = bootstrap_ci(samples, resamples=200)
    expected = _written_out(samples, theirs, resamples=200)
    assert got["mean_average_precision"] == pytest.approx(expected, rel=1e-6)
    assert point_metrics(samples)["mean_average_precision"] == pytest.approx(theirs(np.arange(61)), rel=1e-6)
    assert paired_delta(samples, dict(samples), resamples=50)["mean_average_precision"]["delta"] == 0


def test_point_estimates_agree_with_the_task_metrics_and_lie_inside_their_intervals():
    samples = _classification(n=300, classes=10, right=0.4)
    logits = torch.zeros(300, 10)
    for place, column in enumerate(samples["top5"].T):  # logits whose top 5 are the kept ones
        logits[torch.arange(300), torch.from_numpy(column).long()] = 10.0 - place
    target = torch.from_numpy(samples["target"]).long()
    acc = topk_accuracy(logits, target, (1, 5))
    points = point_metrics(samples)
    assert points == {"top1": acc[1], "top5": acc[5],
                      "mean_per_class_recall": pytest.approx(mean_per_class_recall(logits.argmax(1), target))}
    for kind in (samples, _retrieval(images=60)):
        for metric, (low, high) in bootstrap_ci(kind).items():
            assert low <= point_metrics(kind)[metric] <= high, metric
            assert low < high or low == point_metrics(kind)[metric]


def test_a_paired_comparison_of_identical_outcomes_is_zero():
    for samples in (_classification(), _retrieval()):
        deltas = paired_delta(samples, {k: v.copy() for k, v in samples.items()})
        assert deltas and all(d["delta"] == 0 and (d["low"], d["high"]) == (0, 0) and not d["excludes_zero"]
                              for d in deltas.values())
    worse, better = _classification(right=0.2), _classification(right=0.2)
    better["top5"][:, 0] = better["target"]  # B gets every sample right
    deltas = paired_delta(worse, better)
    assert deltas["top1"]["delta"] == pytest.approx(100 - point_metrics(worse)["top1"])
    assert deltas["top1"]["excludes_zero"] and deltas["top1"]["low"] > 0
    other = dict(better, ids=better["ids"] + 1)
    with pytest.raises(UtabenchError, match="sample ids differ"):
        paired_delta(worse, other)


def test_ranks_count_hits_as_retrieval_recall_does_tied_scores_included():
    torch.manual_seed(0)
    scores = torch.randn(50, 13).round(decimals=1)  # many exact ties
    scores[:, 5] = scores[:, 4]
    positives = torch.zeros(50, 13, dtype=torch.bool)
    positives[torch.arange(50), torch.arange(50) % 13] = True
    ranks = positive_ranks(scores, positives, chunk=16)
    recall = retrieval_recall(scores, positives, (1, 5, 10), chunk=16)
    assert {k: 100.0 * int((ranks < k).sum()) / 50 for k in (1, 5, 10)} == recall
    assert positive_ranks(scores[:1], torch.zeros(1, 13, dtype=torch.bool)).tolist() == [13]  # no positive: never


def test_a_record_without_intervals_reads_as_before():
    raw = {"schema": 1, "status": "complete", "backbone": "x", "task": "t", "dataset": "d", "dataset_type": "d",
           "metrics": {"top1": 1.0}, "provenance": {}}
    record = Record.from_dict(raw)
    assert record.ci == {} and record.ci_method is None
    assert "ci" not in record.to_dict() and "ci_method" not in record.to_dict()


def _run(world, tmp_path, name, *extra, dataset="imagenet", task="zeroshot-classification"):
    common = ["--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
              "--no-progress", "--name", name, "--backbone", "clip:utabench-clip-tiny", *extra]
    if task == "retrieval":
        return main(["run", "retrieval", "--dataset", f"flickr30k:{world / 'flickr30k'}", *common])
    return main(["run", task, "--dataset", f"{dataset}:{world / dataset}", "--dataset-name", "imagenet",
                 "--classes", str(world / "classes.json"), *common])


def test_cli_records_intervals_and_compares_two_backbones(world, tmp_path, capsys):
    results = tmp_path / "r"
    for name, extra in (("a", ()), ("b", ("--option", "seed=1")), ("a-again", ())):
        assert _run(world, tmp_path, name, *extra) == 0
        if name != "a-again":
            assert _run(world, tmp_path, name, *extra, task="retrieval") == 0
    path = record_path(results, "a", "zeroshot-classification", "imagenet")
    record = read_record(path)
    assert set(record.ci) == set(record.metrics) == {"top1", "top5", "mean_per_class_recall"}
    assert record.ci_method["resamples"] == 1000 and record.ci_method["method"] == "percentile bootstrap"
    assert record.provenance["samples"]["file"] == "imagenet.samples.npz" == samples_file(path).name
    samples = load_samples(samples_file(path), record.provenance["samples"]["sha256"])
    assert samples["top5"].shape == (40, 5) and samples["ids"].tolist() == list(range(40))
    assert point_metrics(samples) == record.metrics
    assert bootstrap_ci(samples) == record.ci
    retrieval = read_record(record_path(results, "a", "retrieval", "flickr30k"))
    kept = load_samples(samples_file(record_path(results, "a", "retrieval", "flickr30k")))
    assert point_metrics(kept) == retrieval.metrics and set(retrieval.ci) == set(retrieval.metrics)
    capsys.readouterr()

    assert main(["tables", "--results", str(results), "--table", "1", "--no-paper"]) == 0
    low, high = record.ci["top1"]
    assert f"{record.metrics['top1']:.1f} [{low:.1f}, {high:.1f}]" in capsys.readouterr().out

    assert main(["tables", "--results", str(results), "--compare", "a", "b", "--format", "csv"]) == 0
    rows = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(rows) == 9 and set(rows.task) == {"zeroshot-classification", "retrieval"}
    top1 = rows[rows.metric == "top1"].iloc[0]
    b = read_record(record_path(results, "b", "zeroshot-classification", "imagenet"))
    assert top1.delta == pytest.approx(b.metrics["top1"] - record.metrics["top1"]) and top1.low <= top1.high
    assert main(["tables", "--results", str(results), "--compare", "a", "a-again"]) == 0
    markdown = capsys.readouterr().out
    assert "Paired comparison: B = a-again against A = a" in markdown and "excludes 0" in markdown
    assert markdown.count("| +0.00 ") == 3 and markdown.count("[+0.00, +0.00]") == 3  # top1, top5, mean recall

    # other samples under the same dataset name: refused, in one line
    assert _run(world, tmp_path, "sketch", dataset="imagenet-sketch") == 0
    capsys.readouterr()
    assert main(["tables", "--results", str(results), "--compare", "a", "sketch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ran on different data" in err[0]
    # a samples file that is not the one its record names
    kept_path = samples_file(record_path(results, "b", "zeroshot-classification", "imagenet"))
    kept_path.write_bytes(samples_file(path).read_bytes())
    assert main(["tables", "--results", str(results), "--compare", "a", "b"]) == 2
    assert "sha256 differs" in capsys.readouterr().err
    assert main(["tables", "--results", str(results), "--compare", "a", "nobody"]) == 2
    assert "backbones: a, a-again, b, sketch" in capsys.readouterr().err


def test_report_bars_carry_the_intervals(monkeypatch):
    import matplotlib
    from matplotlib.container import ErrorbarContainer

    matplotlib.use("Agg")
    from utabench.harness import report

    figures = []
    monkeypatch.setattr(report, "_png", lambda fig: figures.append(fig) or "<img>")
    records = [Record(status="complete", backbone=b, task="zeroshot-classification", dataset=d, dataset_type=d,
                      metrics={"top1": 50.0 + i}, ci={"top1": [45.0 + i, 52.0 + i]} if b == "a" else {})
               for i, (b, d) in enumerate([("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")])]
    assert "".join(report._bar_charts(records)).count("<img>") == 1
    bars = [c for c in figures[0].axes[0].containers if isinstance(c, ErrorbarContainer)]
    segments = [segment for bar in bars for segment in bar.lines[2][0].get_segments()]
    spans = sorted((round(float(s[0][1]), 6), round(float(s[1][1]), 6)) for s in segments)
    assert (45.0, 52.0) in spans and (46.0, 53.0) in spans  # backbone a's intervals, as drawn
    assert all(low == high for low, high in spans if (low, high) not in ((45.0, 52.0), (46.0, 53.0)))  # b: none


def test_a_knn_record_carries_intervals_from_its_hits(world, tmp_path):
    assert _run(world, tmp_path, "k", "--ks", "1,5", task="knn") == 0
    path = record_path(tmp_path / "r", "k", "knn", "imagenet")
    record = read_record(path)
    assert set(record.ci) == set(record.metrics) == {"top1_k1", "top1_k5", "top5_k1", "top5_k5"}
    assert record.ci_method["resampled"].startswith("test images")
    samples = load_samples(samples_file(path), record.provenance["samples"]["sha256"])
    assert point_metrics(samples) == record.metrics and bootstrap_ci(samples) == record.ci
    assert all(low <= record.metrics[m] <= high for m, (low, high) in record.ci.items())
