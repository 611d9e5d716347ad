"""WinoGAViL (DataComp's misc/winogavil): a tiny set written with `datasets` itself in the two on-disk forms (the
hf_cache DataComp's load_dataset leaves, a local copy of the hub repository's parquet files), run through the
DataComp config; every metric is checked against DataComp's computation (eval_utils/wino_eval.py, written out
below) with sklearn's jaccard_score on the same model's features; the prompt rule; the refusals."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import jaccard_score
from test_datacomp import run_suite  # the bundled DataComp config on the tiny CLIP

from utabench.backbones import build_backbone
from utabench.core.context import RunContext
from utabench.core.errors import UtabenchError
from utabench.datasets.winogavil import clip_prompt
from utabench.harness.cli import main
from utabench.harness.store import read_record, record_path
from utabench.tasks.bootstrap import (
    bootstrap_ci,
    jaccard_samples,
    load_samples,
    paired_delta,
    point_metrics,
    samples_file,
)
from utabench.tasks.winogavil import Winogavil

torch.set_num_threads(2)
COUNTS = (5, 6, 10, 12, 5, 6, 10, 12, 10)
CUES = ("Apple", "banana", "Elephant", "moon", "ice", "Zebra", "octopus", "Umbrella", "river")
FEATURES = datasets.Features({
    "candidates": datasets.List(datasets.Value("string")), "cue": datasets.Value("string"),
    "associations": datasets.List(datasets.Value("string")), "num_associations": datasets.Value("int64"),
    "num_candidates": datasets.Value("int64"), "ID": datasets.Value("int64"),
    "candidate_images": datasets.List(datasets.Image())})


def _games(rng):
    games = []
    for game, (count, cue) in enumerate(zip(COUNTS, CUES)):
        names = [f"thing{game}_{k}" for k in range(count)]
        chosen = sorted(rng.choice(count, size=int(rng.integers(2, count - 1)), replace=False).tolist())
        images = [Image.fromarray(rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)) for _ in names]
        games.append({"candidates": names, "cue": cue, "associations": [names[k] for k in chosen],
                      "num_associations": len(chosen), "num_candidates": count, "ID": game,
                      "candidate_images": images})
    return games


class WinogavilBuilder(datasets.GeneratorBasedBuilder):
    """How DataComp's load_dataset("nlphuji/winogavil") built its cache: a generator builder of the hub set."""

    games: list = []

    def _info(self):
        return datasets.DatasetInfo(features=self.features_given)

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=datasets.Split.TEST)]

    def _generate_examples(self):
        yield from enumerate(self.games)


def write_cache(cache_dir, games, features=FEATURES):
    builder = type("Winogavil", (WinogavilBuilder,), {"games": games, "features_given": features})
    builder(cache_dir=str(cache_dir), dataset_name="winogavil", repo_id="nlphuji/winogavil",
            hash="0123456789abcdef").download_and_prepare()


@pytest.fixture(scope="module")
def games():
    return _games(np.random.default_rng(0))


# DataComp's eval_utils/wino_eval.py, written out: the prompt, the per-game score and the metrics
def get_clip_prompt(item):
    item = item.lower()
    vowels = ["a", "e", "i", "o", "u"]
    if item[0] in vowels:
        clip_txt = f"An {item}"
    else:
        clip_txt = f"A {item}"
    return clip_txt


def datacomp_metrics(model, hf_dataset):
    all_groups, all_scores = [], []
    transform = model.image_transform()
    for example in hf_dataset:
        images = torch.stack([transform(img) for img in example["candidate_images"]])
        text = model.tokenize([get_clip_prompt(example["cue"])])
        y_true = np.isin(example["candidates"], example["associations"])
        n_images, n_assoc = len(images), y_true.sum()
        with torch.no_grad():
            image_features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
            text_features = torch.nn.functional.normalize(model.encode_text(text), dim=-1)
            image_logits = (text_features @ image_features.T).squeeze(0).cpu().numpy()
        topk_indices = np.argsort(image_logits)[-n_assoc:]
        y_pred = np.isin(np.arange(n_images), topk_indices)
        all_scores.append(jaccard_score(y_true, y_pred))
        all_groups.append(n_images)
    all_groups, all_scores = np.array(all_groups), np.array(all_scores)
    return {"avg_jaccard_score": all_scores.mean(),
            "jaccard_score_5": all_scores[all_groups == 5].mean(),
            "jaccard_score_6": all_scores[all_groups == 6].mean(),
            "jaccard_score_10": all_scores[all_groups == 10].mean(),
            "jaccard_score_12": all_scores[all_groups == 12].mean(),
            "jaccard_score_5-6": all_scores[all_groups <= 6].mean(),
            "jaccard_score_10-12": all_scores[all_groups >= 10].mean()}


def test_prompt_is_datacomps():
    for cue in ("Apple", "apple", "Elephant", "ice", "Octopus", "umbrella", "banana", "Zebra", "Yak", "X-ray", "1st"):
        assert clip_prompt(cue) == get_clip_prompt(cue)
    assert clip_prompt("Umbrella") == "An umbrella" and clip_prompt("Moon") == "A moon"


@pytest.mark.slow
def test_datacomp_suite_scores_winogavil_as_datacomp(games, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    write_cache(data / "hf_cache", games)
    results = run_suite(data, tmp_path, "--batch-size", "16")
    skipped = [line for line in capsys.readouterr().err.splitlines() if "skipped (optional)" in line]
    assert len(skipped) == 37 and not any("winogavil" in line for line in skipped)
    path = record_path(results, "clip-tiny", "winogavil", "misc-winogavil")
    record = read_record(path)
    assert record.status == "complete" and record.provenance["dataset"]["num_images"] == sum(COUNTS)

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # DataComp's own load, offline
    model = build_backbone({"spec": "clip:utabench-clip-tiny"})
    theirs = datacomp_metrics(model, datasets.load_dataset("nlphuji/winogavil", split="test",
                                                           cache_dir=str(data / "hf_cache")))
    assert set(record.metrics) == set(theirs)
    for name, value in theirs.items():
        assert record.metrics[name] == pytest.approx(100.0 * value, abs=1e-6), name
    samples = load_samples(samples_file(path), record.provenance["samples"]["sha256"])
    assert samples["ids"].tolist() == list(range(len(COUNTS))) and samples["candidates"].tolist() == list(COUNTS)
    assert bootstrap_ci(samples) == record.ci and set(record.ci) == set(theirs)
    assert all(low <= record.metrics[m] <= high for m, (low, high) in record.ci.items())

    assert main(["tables", "--results", str(results), "--table", "100"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| clip-tiny"))
    assert "1/38" in row and f"{record.metrics['jaccard_score_10-12']:.2f} (1/38)" in row and "(1/3)" in row

    # the hub repository's parquet files, read by load_dataset(DIR): the same games, the same scores
    repo = tmp_path / "winogavil"
    datasets.Dataset.from_list(games, features=FEATURES).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    monkeypatch.setenv("UTABENCH_CACHE", str(tmp_path / "cache"))
    task = Winogavil()
    local = task.load({"type": "winogavil", "root": str(repo)})
    ctx = RunContext(device="cpu", batch_size=7, cache_dir=tmp_path / "cache", progress=False)
    out = task.run(model, local, ctx)
    assert out.metrics == pytest.approx(record.metrics, abs=1e-9)


@pytest.mark.parametrize("change, message", [
    (lambda g: g.pop("candidate_images"), "no column candidate_images"),
    (lambda g: g["associations"].append("stranger"), "are not among its candidates"),
    (lambda g: g["candidate_images"].pop(), "candidate_images for"),
    (lambda g: g.update(associations=[]), "has no associations"),
    (lambda g: g.update(cue=" "), "has an empty cue"),
])
def test_bad_layouts_are_one_line_and_write_nothing(games, tmp_path, capsys, change, message):
    broken = [dict(g, candidates=list(g["candidates"]), associations=list(g["associations"]),
                   candidate_images=list(g["candidate_images"])) for g in games[:3]]
    for g in broken[1:]:
        change(g)
    features = datasets.Features({k: v for k, v in FEATURES.items() if k in broken[0] and k in broken[1]})
    write_cache(tmp_path / "hf_cache", [{k: g[k] for k in features} for g in broken], features)
    capsys.readouterr()  # the builder's progress
    results = tmp_path / "r"
    assert main(["run", "winogavil", "--dataset", f"winogavil:{tmp_path}", "--backbone", "clip:utabench-clip-tiny",
                 "--results", str(results), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and not results.exists()


def test_a_folder_without_the_set_or_without_images_is_one_line(games, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["run", "winogavil", "--dataset", f"winogavil:{tmp_path / 'empty'}", "--backbone",
                 "clip:utabench-clip-tiny", "--results", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be read by `datasets`" in err and "hf_cache" in err
    named = datasets.Features(dict(FEATURES, candidate_images=datasets.List(datasets.Value("string"))))
    write_cache(tmp_path / "hf_cache", [dict(g, candidate_images=list(g["candidates"])) for g in games[:2]], named)
    capsys.readouterr()
    assert main(["run", "winogavil", "--dataset", f"winogavil:{tmp_path / 'hf_cache' / 'nlphuji___winogavil'}",
                 "--backbone", "clip:utabench-clip-tiny", "--results", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a list of images" in err and not (tmp_path / "r").exists()


def test_game_intervals_equal_a_written_out_bootstrap():
    """Games drawn with replacement; a group's mean over the resamples that drew one of its games (one game of 12
    candidates: many resamples lack it); paired outcomes need the same games."""
    rng = np.random.default_rng(3)
    counts = np.array([5] * 9 + [6] * 8 + [10] * 6 + [12])
    scores = rng.integers(0, 5, len(counts)) / 4.0
    samples = jaccard_samples(scores, counts, np.arange(len(counts)) + 7)
    draws = np.random.default_rng(0)
    rows = [draws.integers(0, len(counts), size=len(counts)) for _ in range(1000)]
    groups = {"avg_jaccard_score": counts > 0, "jaccard_score_5": counts == 5, "jaccard_score_6": counts == 6,
              "jaccard_score_10": counts == 10, "jaccard_score_12": counts == 12, "jaccard_score_5-6": counts <= 6,
              "jaccard_score_10-12": counts >= 10}
    ci = bootstrap_ci(samples)
    assert set(ci) == set(groups) == set(point_metrics(samples))
    for name, member in groups.items():
        stats = [100.0 * scores[row][member[row]].mean() for row in rows if member[row].any()]
        assert ci[name] == pytest.approx(list(np.percentile(stats, [2.5, 97.5])), abs=1e-9), name
        assert point_metrics(samples)[name] == pytest.approx(100.0 * scores[member].mean(), abs=1e-12)
    assert len([row for row in rows if not groups["jaccard_score_12"][row].any()]) > 300
    delta = paired_delta(samples, jaccard_samples(np.clip(scores + 0.25, 0, 1), counts, samples["ids"]))
    assert delta["avg_jaccard_score"]["delta"] > 0 and delta["avg_jaccard_score"]["excludes_zero"]
    with pytest.raises(UtabenchError, match="sample candidates differ"):
        paired_delta(samples, jaccard_samples(scores, counts[::-1], samples["ids"]))
    no_twelve = jaccard_samples(scores[:-1], counts[:-1], samples["ids"][:-1])
    assert "jaccard_score_12" not in point_metrics(no_twelve) and "jaccard_score_10-12" in bootstrap_ci(no_twelve)


def test_a_corrupt_image_is_one_line_or_skips_its_game(games, tmp_path, capsys):
    broken = [dict(g, candidate_images=list(g["candidate_images"])) for g in games[:4]]
    broken[1]["candidate_images"][2] = {"bytes": b"not an image", "path": None}
    write_cache(tmp_path / "hf_cache", broken)
    capsys.readouterr()
    command = ["run", "winogavil", "--dataset", f"winogavil:{tmp_path}", "--backbone", "clip:utabench-clip-tiny",
               "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "image 2 of WinoGAViL game 1" in err and not (tmp_path / "r").exists()
    assert main(command + ["--skip-corrupt"]) == 0
    record = read_record(record_path(tmp_path / "r", "clip:utabench-clip-tiny", "winogavil", "winogavil"))
    assert record.provenance["dataset"]["skipped_images"] == 1 and record.provenance["dataset"]["num_images"] == 27
    assert load_samples(samples_file(record_path(tmp_path / "r", "clip:utabench-clip-tiny", "winogavil",
                                                 "winogavil")))["ids"].tolist() == [0, 2, 3]
