"""Per-sample outcomes of zero-shot classification (multi-label too), retrieval, WinoGAViL, the probes, fine-tuning and
LLaVA-Bench, and bootstrap intervals from them.

A task keeps, per sample, what its metrics are counted from (`TaskOutput.samples`), and the runner writes it beside
the record as `<record>.samples.npz`:

- classification: `top5` (samples, min(5, classes)) the predicted class indices, best first; `target` (samples,) the
  true class; `ids` (samples,) each sample's index in the dataset's sample list; with DataComp's worst-group metrics,
  `group` (samples,) each sample's value of the metadata field grouped by. Besides top-1, top-5 and mean per-class
  recall they count DataComp's macro F1 (`f1_macro`) and worst-group top-1 / top-5 (`top1_worst_group`, ...;
  tasks/group_metrics.py).
- retrieval: `text_rank` (texts,) how many images score above the text's own image (0: its image is first);
  `text_image` (texts,) the position (in `ids`) of the text's image; `image_rank` (images,) how many texts score
  above the best of the image's own texts; `ids` (images,) each image's index in the dataset's image list.
- jaccard (WinoGAViL): `jaccard` (games,) each game's Jaccard index of the chosen candidates with its associations
  (0..1); `candidates` (games,) its number of candidates; `ids` (games,) each game's index in the set. The metrics are
  DataComp's (eval_utils/wino_eval.py): the mean index over all games (avg_jaccard_score) and over the games with 5,
  6, 10, 12, at most 6 and at least 10 candidates (jaccard_score_5, ..., jaccard_score_5-6, jaccard_score_10-12), in
  percent; a group without games has no value.
- multilabel (zero-shot on a multi-label set): `scores` (samples, classes) the zero-shot logits; `multi_hot` (samples,
  classes) the labels; `ids` (samples,). The metric is clip_benchmark's mean average precision (tasks/metrics.py).
- iou (segmentation): `intersect`, `union`, `pred`, `label` (images, classes) each test image's pixel counts per class
  as mmseg's IoUMetric counts them; `ids` (images,). The metrics are IoUMetric's: mIoU (the mean over classes of the
  summed intersection over the summed union, a class with no union left out), mAcc (intersection over label) and aAcc
  (all intersections over all labels), in percent (the record's are mmseg's, rounded to 0.01; the interval is not).
- relative (LLaVA-Bench): `reference` and `model` (questions,) the judge's scores of the reference answer and of the
  model's, for the questions whose review parsed; `in_<metric>` (questions,) whether a question counts in a metric
  (its category, and overall); `ids` (questions,) each question's index in the bench. The metric is LLaVA's relative
  score, 100 x the model's summed score over the reference's (upstream rounds it to 0.1; the interval is unrounded).
- hits (kNN, few-shot, fine-tuning): `hit_<metric>` (samples,) for each metric, the sample's hit (0 or 1; few-shot:
  its mean over the seeds, whose probes all score the same test split); `ids` (samples,). The metric is the mean hit,
  in percent.

Every metric is recomputed from these (`point_metrics`; a hit at k is a rank below k), and its 95% interval is the
percentile bootstrap over `RESAMPLES` resamples drawn with `SEED`: resample `b` is `rng.integers(0, n, size=n)` of
one `numpy.random.default_rng(SEED)`, drawn in order b = 0, 1, ...; the interval is `numpy.percentile(stats,
[2.5, 97.5])` (linear interpolation) of the metric over the resamples.

What is resampled: the images. A classification resample draws images with replacement; mean per-class recall is
averaged over the classes present in the resample (not stratified by class), and so are macro F1 and the worst
group's accuracy (over the classes and groups present). A retrieval resample draws images with
replacement and each drawn image carries all its texts, for both directions: text retrieval (image -> texts) counts
the drawn images, image retrieval (text -> image) the texts they carry (a cluster bootstrap: an image's captions are
not independent of one another). The ranks stay those against the full gallery; the resamples vary which queries
count, not what they are ranked against. A jaccard resample draws games; a group's interval is over the resamples
that drew one of its games. A multilabel resample draws images, and each class's average precision ranks the drawn
images (a class that none of them has counts 0, as in the full set). A hits resample draws test images; a few-shot
interval is that of the seeds' mean on resampled test images, with the shots held fixed (the spread over shot
selections is the record's `_std`). A relative resample draws questions; a category's interval is over the resamples
that drew one of its questions. An iou resample draws test images and sums their areas.

A paired comparison (`paired_delta`) draws the same resample indices for both backbones' outcomes on the same
samples, so Δ = B − A is resampled with what the two share.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
CHUNK_VALUES = 4_000_000  # resample indices evaluated at once (resamples x samples), to bound memory

CLASSIFICATION_METRICS = ("top1", "top5", "mean_per_class_recall")  # and f1_macro, which a record has on request
WORST_GROUP = {"top1_worst_group": "top1", "top5_worst_group": "top5"}  # which hit each worst group averages
_RECALL = re.compile(r"^(text|image)_r(\d+)$")
# DataComp's WinoGAViL metrics: which games (by their number of candidates) each averages
JACCARD_GROUPS = {"avg_jaccard_score": lambda n: n > 0, "jaccard_score_5": lambda n: n == 5,
                  "jaccard_score_6": lambda n: n == 6, "jaccard_score_10": lambda n: n == 10,
                  "jaccard_score_12": lambda n: n == 12, "jaccard_score_5-6": lambda n: n <= 6,
                  "jaccard_score_10-12": lambda n: n >= 10}

MAP = "mean_average_precision"
AREAS = ("intersect", "union", "pred", "label")  # an iou file's per-image pixel counts (mmseg's IoUMetric)
IOU_METRICS = ("mIoU", "mAcc", "aAcc")
HIT = "hit_"  # a hits file's array of one metric: hit_top1_k10
IN = "in_"  # a relative file's membership of one metric: in_overall
Samples = Dict[str, np.ndarray]


def kind_of(samples: Samples) -> str:
    """classification, retrieval, jaccard, multilabel, relative, iou or hits, from the arrays a samples file holds."""
    if {"top5", "target", "ids"} <= set(samples):
        return "classification"
    if {"text_rank", "text_image", "image_rank", "ids"} <= set(samples):
        return "retrieval"
    if {"jaccard", "candidates", "ids"} <= set(samples):
        return "jaccard"
    if {"scores", "multi_hot", "ids"} <= set(samples):
        return "multilabel"
    if {"reference", "model", "ids"} <= set(samples):
        return "relative"
    if set(AREAS) <= set(samples):
        return "iou"
    if "ids" in samples and any(key.startswith(HIT) for key in samples):
        return "hits"
    raise UtabenchError(f"per-sample outcomes with arrays {sorted(samples)} are neither classification's (top5, "
                        "target, ids), retrieval's (text_rank, text_image, image_rank, ids), WinoGAViL's (jaccard, "
                        "candidates, ids), multilabel (scores, multi_hot, ids), relative (reference, model, ids), iou "
                        f"({', '.join(AREAS)}, ids) nor hits ({HIT}<metric>..., ids)")


def units(samples: Samples) -> int:
    """How many units a resample draws: samples (images; texts with their images for retrieval), games (jaccard) or
    questions (relative)."""
    return len(samples["ids"])


def classification_samples(top: np.ndarray, target: np.ndarray, ids: np.ndarray,
                           group: Optional[np.ndarray] = None) -> Samples:
    out = {"top5": np.asarray(top, dtype=np.int32), "target": np.asarray(target, dtype=np.int32),
           "ids": np.asarray(ids, dtype=np.int64)}
    return out if group is None else {**out, "group": np.asarray(group, dtype=np.int64)}


def retrieval_samples(text_rank: np.ndarray, text_image: np.ndarray, image_rank: np.ndarray,
                      ids: np.ndarray) -> Samples:
    return {"text_rank": np.asarray(text_rank, dtype=np.int32), "text_image": np.asarray(text_image, dtype=np.int32),
            "image_rank": np.asarray(image_rank, dtype=np.int32), "ids": np.asarray(ids, dtype=np.int64)}


def jaccard_samples(jaccard: np.ndarray, candidates: np.ndarray, ids: np.ndarray) -> Samples:
    return {"jaccard": np.asarray(jaccard, dtype=np.float64), "candidates": np.asarray(candidates, dtype=np.int32),
            "ids": np.asarray(ids, dtype=np.int64)}


def multilabel_samples(scores: np.ndarray, multi_hot: np.ndarray, ids: np.ndarray) -> Samples:
    return {"scores": np.asarray(scores, dtype=np.float32), "multi_hot": np.asarray(multi_hot, dtype=bool),
            "ids": np.asarray(ids, dtype=np.int64)}


def relative_samples(reference: np.ndarray, model: np.ndarray, members: Dict[str, np.ndarray],
                     ids: np.ndarray) -> Samples:
    """`members` {metric: (questions,) bool} the questions each relative score sums over."""
    return {"reference": np.asarray(reference, dtype=np.float64), "model": np.asarray(model, dtype=np.float64),
            **{IN + metric: np.asarray(member, dtype=bool) for metric, member in members.items()},
            "ids": np.asarray(ids, dtype=np.int64)}


def iou_samples(intersect: np.ndarray, union: np.ndarray, pred: np.ndarray, label: np.ndarray) -> Samples:
    """Each test image's areas, in dataset order."""
    areas = {name: np.asarray(value, dtype=np.float64) for name, value in zip(AREAS, (intersect, union, pred, label))}
    return {**areas, "ids": np.arange(len(areas["intersect"]), dtype=np.int64)}


def hits_samples(hits: Dict[str, np.ndarray], ids: np.ndarray) -> Samples:
    """`hits` {metric: (samples,) hit per sample, 0..1}."""
    return {**{HIT + metric: np.asarray(hit, dtype=np.float64) for metric, hit in hits.items()},
            "ids": np.asarray(ids, dtype=np.int64)}


def supported(samples: Samples, metrics: Sequence[str]) -> List[str]:
    """The metrics of `metrics` that can be counted from `samples`."""
    if kind_of(samples) == "classification":
        out = [m for m in metrics if m in CLASSIFICATION_METRICS + ("f1_macro",)
               or (m in WORST_GROUP and "group" in samples)]
        return [m for m in out if WORST_GROUP.get(m, m) != "top5" or samples["top5"].shape[1] >= 5]
    if kind_of(samples) == "jaccard":  # a group needs games
        return [m for m in metrics if m in JACCARD_GROUPS and JACCARD_GROUPS[m](samples["candidates"]).any()]
    if kind_of(samples) == "hits":
        return [m for m in metrics if HIT + m in samples]
    if kind_of(samples) == "multilabel":
        return [m for m in metrics if m == MAP]
    if kind_of(samples) == "iou":
        return [m for m in metrics if m in IOU_METRICS]
    if kind_of(samples) == "relative":  # a category needs questions whose reference scored
        return [m for m in metrics if IN + m in samples and samples["reference"][samples[IN + m]].sum() > 0]
    return [m for m in metrics if _RECALL.match(m)]


class _Counter:
    """What a metric counts, per unit, so that a batch of resamples (rows of unit indices) is counted at once."""

    def __init__(self, samples: Samples, metrics: Sequence[str]):
        self.kind = kind_of(samples)
        self.metrics = list(metrics)
        unknown = set(self.metrics) - set(supported(samples, self.metrics))
        if unknown:
            raise UtabenchError(f"cannot count {sorted(unknown)} from {self.kind} per-sample outcomes")
        self.n = units(samples)
        if self.kind == "classification":
            top, target = samples["top5"], samples["target"]
            hits = top == target[:, None]
            self.hit = {"top1": hits[:, 0], "top5": hits[:, :5].any(axis=1)}
            self.target = target.astype(np.int64)
            self.classes = int(max(target.max(initial=-1), top.max(initial=-1))) + 1
            self.predicted = top[:, 0].astype(np.int64)
            if "group" in samples:  # groups numbered 0.. in order of value
                values, self.group = np.unique(samples["group"], return_inverse=True)
                self.groups = len(values)
        elif self.kind == "jaccard":
            self.jaccard = samples["jaccard"].astype(np.float64)
            self.member = {metric: JACCARD_GROUPS[metric](samples["candidates"]) for metric in self.metrics}
        elif self.kind == "hits":
            self.hit = {metric: samples[HIT + metric].astype(np.float64) for metric in self.metrics}
        elif self.kind == "multilabel":
            self.scores, self.truth = samples["scores"], samples["multi_hot"].astype(bool)
        elif self.kind == "iou":
            self.areas = {name: samples[name] for name in AREAS}
        elif self.kind == "relative":
            self.reference, self.model = samples["reference"], samples["model"]
            self.member = {metric: samples[IN + metric] for metric in self.metrics}
        else:
            text_image = samples["text_image"].astype(np.int64)
            self.texts = np.bincount(text_image, minlength=self.n)
            self.hit = {}
            for metric in self.metrics:
                side, k = _RECALL.match(metric).groups()
                if side == "text":  # image -> its texts: one query per image
                    self.hit[metric] = samples["image_rank"] < int(k)
                else:  # text -> its image: the image's texts that found it, per image
                    found = (samples["text_rank"] < int(k)).astype(np.float64)
                    self.hit[metric] = np.bincount(text_image, weights=found, minlength=self.n).astype(np.int64)

    def __call__(self, index: np.ndarray) -> Dict[str, np.ndarray]:
        """Each metric (percent) of each resample, `index` (resamples, n) the units each resample drew."""
        if self.kind == "iou":
            return self._iou(index)
        out = {}
        for metric in self.metrics:
            if metric == "mean_per_class_recall":
                counts, hits = self._per_bin(index, self.target, self.classes, self.hit["top1"])
                out[metric] = 100.0 * _mean_present(hits / np.maximum(counts, 1), counts)
            elif metric == "f1_macro":  # 2TP / (2TP + FP + FN) = 2TP / (predicted + true), per class present
                counts, hits = self._per_bin(index, self.target, self.classes, self.hit["top1"])
                predicted, _ = self._per_bin(index, self.predicted, self.classes)
                out[metric] = 100.0 * _mean_present(2 * hits / np.maximum(predicted + counts, 1), counts)
            elif metric in WORST_GROUP:
                counts, hits = self._per_bin(index, self.group, self.groups, self.hit[WORST_GROUP[metric]])
                accuracy = np.where(counts > 0, hits / np.maximum(counts, 1), np.inf)
                out[metric] = 100.0 * accuracy.min(axis=1)
            elif self.kind == "multilabel":
                out[metric] = self._mean_average_precision(index)
            elif self.kind == "relative":  # NaN where a resample drew none of the metric's questions (or only 0s)
                member = self.member[metric][index]
                reference = (self.reference[index] * member).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[metric] = np.where(reference > 0, 100.0 * (self.model[index] * member).sum(axis=1)
                                           / reference, np.nan)
            elif self.kind == "jaccard":  # the group's mean in each resample; NaN where it drew none of the group
                member = self.member[metric][index]
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[metric] = 100.0 * (self.jaccard[index] * member).sum(axis=1) / member.sum(axis=1)
            elif self.kind == "retrieval" and metric.startswith("image_"):
                out[metric] = 100.0 * self.hit[metric][index].sum(axis=1) / self.texts[index].sum(axis=1)
            else:
                out[metric] = 100.0 * self.hit[metric][index].sum(axis=1) / self.n
        return out

    def _iou(self, index: np.ndarray) -> Dict[str, np.ndarray]:
        """IoUMetric's metrics of each resample: its images' areas summed (a draw matrix times the areas)."""
        draws = np.stack([np.bincount(row, minlength=self.n) for row in index]).astype(np.float64)
        total = {name: draws @ areas for name, areas in self.areas.items()}
        with np.errstate(invalid="ignore", divide="ignore"):
            values = {"mIoU": np.nanmean(total["intersect"] / total["union"], axis=1),
                      "mAcc": np.nanmean(total["intersect"] / total["label"], axis=1),
                      "aAcc": total["intersect"].sum(axis=1) / total["label"].sum(axis=1)}
        return {metric: 100.0 * values[metric] for metric in self.metrics}

    @staticmethod
    def _per_bin(index: np.ndarray, bins: np.ndarray, size: int, hit: Optional[np.ndarray] = None):
        """(resamples, size) how many drawn units fall in each bin and, with `hit`, how many of them hit."""
        rows = (np.arange(index.shape[0])[:, None] * size + bins[index]).ravel()
        counts = np.bincount(rows, minlength=index.shape[0] * size).reshape(-1, size)
        if hit is None:
            return counts, None
        hits = np.bincount(rows, weights=hit[index].ravel().astype(np.float64), minlength=index.shape[0] * size)
        return counts, hits.reshape(-1, size)

    def _mean_average_precision(self, index: np.ndarray) -> np.ndarray:
        """tasks/metrics.mean_average_precision of each resample's images (rows of `index`), vectorised."""
        rows = np.arange(index.shape[0])[:, None]
        ranks = np.arange(1, index.shape[1] + 1, dtype=np.float64)
        total = np.zeros(index.shape[0])
        for k in range(self.scores.shape[1]):
            order = np.argsort(-self.scores[index, k], axis=1, kind="stable")
            truth = self.truth[index, k][rows, order]
            precision = np.cumsum(truth, axis=1) / ranks
            total += (precision * truth).sum(axis=1) / np.maximum(truth.sum(axis=1), 1)
        return 100.0 * total / self.scores.shape[1]


def _mean_present(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each row's mean of `values` over the columns whose count is positive."""
    return np.where(counts > 0, values, 0.0).sum(axis=1) / (counts > 0).sum(axis=1)


def point_metrics(samples: Samples, metrics: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """The metrics (percent) counted from every sample once: the record's numbers."""
    metrics = supported(samples, metrics if metrics is not None else _all_metrics(samples))
    counted = _Counter(samples, metrics)(np.arange(units(samples))[None, :])
    return {metric: float(values[0]) for metric, values in counted.items()}


def _all_metrics(samples: Samples) -> List[str]:
    if kind_of(samples) == "classification":
        return list(CLASSIFICATION_METRICS) + (list(WORST_GROUP) if "group" in samples else [])
    if kind_of(samples) == "jaccard":
        return list(JACCARD_GROUPS)
    if kind_of(samples) == "hits":
        return [key[len(HIT):] for key in samples if key.startswith(HIT)]
    if kind_of(samples) == "multilabel":
        return [MAP]
    if kind_of(samples) == "relative":
        return [key[len(IN):] for key in samples if key.startswith(IN)]
    if kind_of(samples) == "iou":
        return list(IOU_METRICS)
    return [f"{side}_r{k}" for side in ("text", "image") for k in (1, 5, 10)]


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """The resamples' unit indices, in batches of rows: row b is `rng.integers(0, n, size=n)`, drawn in order from
    one `default_rng(seed)` (the same rows for every metric and for both sides of a paired comparison)."""
    if n < 1:
        raise UtabenchError("a bootstrap needs at least one sample")
    rng = np.random.default_rng(seed)
    batch = max(1, CHUNK_VALUES // n)
    for start in range(0, resamples, batch):
        yield np.stack([rng.integers(0, n, size=n) for _ in range(min(batch, resamples - start))])


def _interval(stats: np.ndarray, level: float) -> List[float]:
    tail = round(50.0 * (1.0 - level), 10)  # 2.5 for 95%, exactly
    stats = stats[~np.isnan(stats)]  # the resamples that drew none of a group's games or a category's questions
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return [float(low), float(high)]


def _resampled(counters: Sequence[_Counter], n: int, resamples: int, seed: int) -> List[Dict[str, np.ndarray]]:
    parts: List[Dict[str, List[np.ndarray]]] = [{m: [] for m in c.metrics} for c in counters]
    for index in resample_indices(n, resamples, seed):
        for counter, part in zip(counters, parts):
            for metric, values in counter(index).items():
                part[metric].append(values)
    return [{metric: np.concatenate(values) for metric, values in part.items()} for part in parts]


def bootstrap_ci(samples: Samples, metrics: Optional[Sequence[str]] = None, resamples: int = RESAMPLES,
                 seed: int = SEED, level: float = LEVEL) -> Dict[str, List[float]]:
    """{metric: [low, high]}: the percentile bootstrap interval of each metric that `samples` can count (of
    `metrics`, default all)."""
    metrics = supported(samples, metrics if metrics is not None else _all_metrics(samples))
    if not metrics:
        return {}
    stats = _resampled([_Counter(samples, metrics)], units(samples), resamples, seed)[0]
    return {metric: _interval(values, level) for metric, values in stats.items()}


def ci_method(samples: Samples, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Dict[str, str]:
    """How the record's intervals were made (its `ci_method`)."""
    kind = kind_of(samples)
    unit = {"classification": "images, with replacement; mean per-class recall over the classes present in each "
                              "resample (not stratified)",
            "retrieval": "images, with replacement, each carrying all its texts (text retrieval counts the images, "
                         "image retrieval their texts); ranks against the full gallery",
            "jaccard": "games, with replacement; a group's mean over the resamples that drew one of its games",
            "multilabel": "images, with replacement; each class's average precision over the drawn images",
            "iou": "test images, with replacement; each resample's areas summed before the ratios",
            "relative": "questions, with replacement; a category's score over the resamples that drew one of its "
                        "questions",
            "hits": "test images, with replacement (few-shot: the shots held fixed, each image's hit its mean over the "
                    "seeds)"}[kind]
    return {"method": "percentile bootstrap", "level": level, "resamples": resamples, "seed": seed,
            "resampled": unit, "units": units(samples), "module": "utabench.tasks.bootstrap"}


def same_samples(a: Samples, b: Samples) -> Optional[str]:
    """Why two outcomes are not on the same samples (None when they are)."""
    if kind_of(a) != kind_of(b):
        return f"one is {kind_of(a)}, the other {kind_of(b)}"
    keys = ("ids", {"classification": "target", "retrieval": "text_image", "jaccard": "candidates",
                    "multilabel": "multi_hot", "relative": "ids", "iou": "label", "hits": "ids"}[kind_of(a)])
    for key in keys:
        if a[key].shape != b[key].shape or not np.array_equal(a[key], b[key]):
            return f"their sample {key if key.endswith('s') else key + 's'} differ"
    return None


def paired_delta(a: Samples, b: Samples, metrics: Optional[Sequence[str]] = None, resamples: int = RESAMPLES,
                 seed: int = SEED, level: float = LEVEL) -> Dict[str, Dict[str, float]]:
    """{metric: {a, b, delta, low, high, excludes_zero}}: Δ = B − A on the same samples, its interval from the same
    resamples of both."""
    reason = same_samples(a, b)
    if reason:
        raise UtabenchError(f"cannot pair these outcomes: {reason}")
    metrics = [m for m in supported(a, metrics if metrics is not None else _all_metrics(a)) if m in supported(b, [m])]
    if not metrics:
        return {}
    counters = [_Counter(a, metrics), _Counter(b, metrics)]
    stats_a, stats_b = _resampled(counters, units(a), resamples, seed)
    points_a, points_b = point_metrics(a, metrics), point_metrics(b, metrics)
    out = {}
    for metric in metrics:
        low, high = _interval(stats_b[metric] - stats_a[metric], level)
        out[metric] = {"a": points_a[metric], "b": points_b[metric], "delta": points_b[metric] - points_a[metric],
                       "low": low, "high": high, "excludes_zero": bool(low > 0 or high < 0)}
    return out


def samples_file(record: Path) -> Path:
    """Where a record's per-sample outcomes go: `<record stem>.samples.npz` beside `<record>.json`."""
    record = Path(record)
    return record.with_name(f"{record.stem}.samples.npz")


def save_samples(path: Path, samples: Samples) -> str:
    """Write the outcomes (npz, compressed) atomically; returns the file's sha256."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{key: np.ascontiguousarray(value) for key, value in samples.items()})
    data = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def load_samples(path: Path, sha256: Optional[str] = None) -> Samples:
    """The outcomes of a samples file (no pickled objects); with `sha256`, refused unless the file has it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UtabenchError(f"cannot read per-sample outcomes {path}: {exc.strerror or exc}") from exc
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise UtabenchError(f"{path} is not the per-sample outcomes its record names (sha256 differs); run the record "
                            "again with --force")
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}
