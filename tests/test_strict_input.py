"""A typo never runs the wrong experiment: every bad key or value of a config, a dataset entry or a flag is refused
before any work, with one line that names it (and the closest allowed key), exit code 2 and nothing written."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest
import torch
import yaml
from conftest import llava_entry

from utabench.harness.cli import main

TINY = "clip:utabench-clip-tiny"


def _config(tmp_path, data, *, backbones=None, tasks=None, **top):
    world = data
    cfg = {"settings": {"device": "cpu", "batch_size": 8},
           "backbones": backbones or [{"name": "clip-tiny", "spec": TINY}],
           "tasks": tasks or {"zeroshot-classification": [
               {"name": "imagenet-1k", "type": "imagenet", "root": str(world / "imagenet"),
                "classes": str(world / "classes.json")}]},
           **top}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ["run-all", "--config", str(path)]


def _pretrain_yaml(tmp_path, world, **changes):
    cfg = {"objective": "uta", "student": {"model": "world"}, "teacher": {"spec": "uta:world"},
           "data": {"type": "imagefolder", "root": str(world / "imagenet" / "train")},
           "optim": {"batch_size": 4, "steps": 1, "warmup_steps": 1}, "workers": 0}
    cfg.update(changes)
    path = tmp_path / "student.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _llava(world, **changes):
    return {"llava-bench": [llava_entry(world, **changes)]}


def _run(task="zeroshot-classification", dataset=None, *flags):
    return ["run", task, "--backbone", TINY, "--dataset", dataset or "imagenet:/nonexistent", *flags]


def _folder(world):
    return f"imagefolder:{world / 'imagenet' / 'val'}"


def _named(name, flag="--name"):
    """A zero-shot run on a real dataset whose backbone (or dataset) gets `name`."""
    return lambda t, w: _run("zeroshot-classification", _folder(w), flag, name)


def _templates(text):
    def build(t, w):
        (t / "templates.txt").write_text(text)
        return _run("zeroshot-classification", _folder(w), "--templates", str(t / "templates.txt"))
    return build


def _checkpoint(make):
    """A run whose --checkpoint is the file `make(path)` writes."""
    def build(t, w):
        make(t / "weights.pt")
        return _run("zeroshot-classification", _folder(w), "--checkpoint", str(t / "weights.pt"))
    return build


def _truncated(path):
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:2000])


class _Code:
    def __reduce__(self):
        return os.system, ("echo the checkpoint ran code",)


def _dangling(t, w):
    root = t / "folder"
    shutil.copytree(w / "imagenet" / "val", root)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    (first / "dangling.jpg").symlink_to("/nonexistent/dangling.jpg")
    return _run("zeroshot-classification", f"imagefolder:{root}")


# (id, argv builder (tmp_path, world) -> argv, the part of the one line that must appear)
CASES = [
    ("option-typo", lambda t, w: _run("zeroshot-classification", None, "--option", "imagesize=56"),
     "unknown key 'imagesize'; did you mean 'image_size'?"),
    ("option-not-int", lambda t, w: _run("zeroshot-classification", None, "--option", "image_size=abc"),
     "image_size: Input should be a valid integer"),
    ("option-zero", lambda t, w: _run("zeroshot-classification", None, "--option", "image_size=0"),
     "image_size: Input should be greater than 0"),
    ("option-negative-seed", lambda t, w: _run("zeroshot-classification", None, "--option", "seed=-1"),
     "seed: Input should be greater than or equal to 0"),
    ("option-of-another-family", lambda t, w: _run("zeroshot-classification", None, "--option", "text=checkpoint"),
     "unknown key 'text'"),
    ("option-without-value", lambda t, w: _run("zeroshot-classification", None, "--option", "image_size"),
     "--option 'image_size' must be KEY=VALUE"),
    ("device", lambda t, w: _run("zeroshot-classification", None, "--device", "tpu"),
     "--device: Input should be 'auto', 'cpu' or 'cuda' (got 'tpu')"),
    ("workers", lambda t, w: _run("zeroshot-classification", None, "--workers", "-1"),
     "--workers: Input should be auto or a number of processes >= 0"),
    ("threads", lambda t, w: _run("zeroshot-classification", None, "--threads", "-2"),
     "--threads: Input should be greater than 0"),
    ("batch-size", lambda t, w: _run("zeroshot-classification", None, "--batch-size", "0"),
     "--batch-size: Input should be greater than 0"),
    ("precision", lambda t, w: _run("zeroshot-classification", None, "--precision", "fp8"),
     "--precision: Input should be 'auto', 'fp32', 'amp_bf16' or 'amp_fp16'"),
    ("unknown-flag", lambda t, w: _run("zeroshot-classification", None, "--bogus"),
     "unrecognized arguments: --bogus"),
    ("flag-of-another-task", lambda t, w: _run("zeroshot-classification", None, "--iters", "5"),
     "unrecognized arguments: --iters 5"),
    ("iters-not-int", lambda t, w: _run("detection", f"coco:{w / 'coco'}", "--iters", "abc"),
     "iters: Input should be a valid integer"),
    ("recipe-typo", lambda t, w: _run("detection", f"coco:{w / 'coco'}", "--recipe", "cascade_mask_rcnn_wrld_coco"),
     "unknown dense recipe 'cascade_mask_rcnn_wrld_coco'"),
    ("eval-only-missing", lambda t, w: _run("segmentation", f"ade20k:{w / 'ade20k'}", "--eval-only", "/no/ft.pth"),
     "eval_only checkpoint /no/ft.pth does not exist"),
    ("paper-model", lambda t, w: _run("zeroshot-classification", None, "--paper", "UTA B16 2B"),
     "paper: model: model 'B16' must be ARCH[/PATCH][@INPUT]"),
    ("dataset-without-type", lambda t, w: ["run", "retrieval", "--backbone", TINY, "--dataset", "/data/f30k"],
     "--dataset '/data/f30k' must be type:DIR"),
    ("results-under-a-file", lambda t, w: _run("zeroshot-classification", f"imagenet:{w / 'imagenet'}",
                                                "--classes", str(w / "classes.json"), "--results", "/etc/hostname/r"),
     "results directory /etc/hostname/r cannot be created: /etc/hostname is not a directory"),
    ("backbone-key-typo", lambda t, w: _config(t, w, backbones=[{"name": "x", "spec": TINY, "chekpoint": "w.pt"}]),
     "backbones[0] (x): unknown key 'chekpoint'; did you mean 'checkpoint'?"),
    ("settings-batchsize", lambda t, w: _config(t, w, settings={"batchsize": 8}),
     "settings: unknown key 'batchsize'; did you mean 'batch_size'?"),
    ("settings-devise", lambda t, w: _config(t, w, settings={"devise": "cpu"}),
     "settings: unknown key 'devise'; did you mean 'device'?"),
    ("settings-type", lambda t, w: _config(t, w, settings={"batch_size": "many"}),
     "settings.batch_size: Input should be a valid integer"),
    ("top-level-typo", lambda t, w: _config(t, w, task={}),
     "unknown key 'task'; did you mean 'tasks'?"),
    ("dataset-key-typo", lambda t, w: _config(t, w, tasks={"zeroshot-classification": [
        {"type": "imagenet", "root": str(w / "imagenet"), "clases": str(w / "classes.json")}]}),
     "tasks.zeroshot-classification[0]: unknown key 'clases'; did you mean 'classes'?"),
    ("dataset-backbones-typo", lambda t, w: _config(t, w, tasks={"zeroshot-classification": [
        {"type": "imagenet", "root": str(w / "imagenet"), "backbones": ["clip-tyni"]}]}),
     "`backbones` names 'clip-tyni', which is not a backbone of this config"),
    ("dense-key-typo", lambda t, w: _config(t, w, tasks={"segmentation": [
        {"type": "ade20k", "root": str(w / "ade20k"), "iter": 5}]}),
     "unknown key 'iter'; did you mean 'iters'?"),
    ("retrieval-split", lambda t, w: _config(t, w, tasks={"retrieval": [
        {"type": "flickr30k", "root": str(w / "flickr30k"), "split": "tset"}]}),
     "split: Input should be 'test', 'val', 'train' or 'restval' (got 'tset')"),
    ("task-typo", lambda t, w: _config(t, w, tasks={"zeroshot-clasification": []}),
     "unknown task 'zeroshot-clasification'"),
    ("world-key-typo", lambda t, w: _config(t, w, **{"world": {"sed": 1}}),
     "world: unknown key 'sed'; did you mean 'seed'?"),
    ("world-count-typo", lambda t, w: _config(t, w, **{"world": {"counts": {"vall": 3}}}),
     "world.counts: unknown key 'vall'; did you mean 'val'?"),
    ("paper-key-typo", lambda t, w: _config(t, w, backbones=[
        {"name": "u", "spec": "uta:tiny", "paper": {"method": "UTA", "modle": "B/16@224"}}]),
     "paper: unknown key 'modle'; did you mean 'model'?"),
    ("pretrain-entry-typo", lambda t, w: _config(t, w, backbones=[
        {"name": "s", "pretrain": "world-student.yaml", "objectve": "mim"}]),
     "unknown key 'objectve'; did you mean 'objective'?"),
    ("pretrain-objective", lambda t, w: _config(t, w, backbones=[
        {"name": "s", "pretrain": "world-student.yaml", "objective": "mae"}]),
     "objective 'mae' is not one of clip, clip-ft, fd, mim, text-uta, uta, uta+mim"),
    ("pretrain-nested-typo", lambda t, w: _config(t, w, backbones=[
        {"name": "s", "pretrain": _pretrain_yaml(t, w, optim={"epoch": 1})}]),
     "optim: unknown key 'epoch'; did you mean 'epochs'?"),
    ("pretrain-cli-nested-typo", lambda t, w: ["pretrain", "uta", "--config",
                                               _pretrain_yaml(t, w, mask={"ration": 0.4}), "--out", str(t / "o")],
     "mask: unknown key 'ration'; did you mean 'ratio'?"),
    ("pretrain-cli-workers", lambda t, w: ["pretrain", "uta", "--config", _pretrain_yaml(t, w), "--out", str(t / "o"),
                                           "--workers", "-1"],
     "--workers: Input should be auto or a number of processes >= 0"),
    ("llava-judge", lambda t, w: _config(t, w, tasks=_llava(w, judge={"type": "gpt4"})),
     "unknown judge type 'gpt4'; known judge types: offline, openai"),
    ("llava-override-typo", lambda t, w: _config(t, w, tasks=_llava(w, overrides={"projecter": "linear"})),
     "unknown key 'projecter'; did you mean 'projector'?"),
    ("llava-stage-incomplete", lambda t, w: _config(t, w, tasks=_llava(w, stage1={"data": "x.json"})),
     "stage1.images: Field required"),
    ("llava-judge-key-in-config", lambda t, w: _config(t, w, tasks=_llava(w, judge={
        "type": "openai", "model": "gpt-4-0314", "base_url": "http://localhost:1", "api_key": "sk-1"})),
     "judge.api_key is not read from configs"),
    ("tables-number", lambda t, w: ["tables", "--results", str(t), "--table", "12"],
     "unknown table '12'; known tables: 1, 10, 100, 11, 2, 3, 4, 5, 6, 7, 8, 9"),
    # names that become folders or files: never outside the results, never hidden, never too long (issue 39)
    ("name-parent", _named(".."), "name '..' starts with '.'"),
    ("name-dot", _named("."), "name '.' starts with '.'"),
    ("name-escape", _named("../../escaped"), "name '../../escaped' starts with '.'"),
    ("name-hidden", _named(".hidden"), "name '.hidden' starts with '.'"),
    ("name-control", _named("uta\nb16"), "name 'uta\\nb16' contains a control character"),
    ("name-too-long", _named("x" * 300), "has 300 characters, more than a file name takes here (at most 200)"),
    ("name-empty", _named(" "), "name ' ' is empty"),
    ("dataset-name-parent", _named("..", "--dataset-name"), "dataset name '..' starts with '.'"),
    ("dataset-name-too-long", _named("d" * 256, "--dataset-name"), "dataset name 'ddd"),
    ("config-name-parent", lambda t, w: _config(t, w, backbones=[{"name": "..", "spec": TINY}]),
     "backbones[0] (..): name '..' starts with '.'"),
    ("config-name-nul", lambda t, w: _config(t, w, backbones=[{"name": "a\0b", "spec": TINY}]),
     "contains a control character"),
    ("config-dataset-name", lambda t, w: _config(t, w, tasks={"zeroshot-classification": [
        {"name": "../x", "type": "imagefolder", "root": str(w / "imagenet" / "val")}]}),
     "dataset name '../x' starts with '.'"),
    ("config-names-collide", lambda t, w: _config(t, w, backbones=[{"name": "clip tiny", "spec": TINY},
                                                                    {"name": "clip/tiny", "spec": TINY}]),
     "backbone names 'clip tiny' and 'clip/tiny' would both be stored as 'clip_tiny'"),
    ("unknown-clip-model", lambda t, w: ["run", "zeroshot-classification", "--backbone", "clip:ViT-B-61",
                                         "--dataset", _folder(w)],
     "unknown open_clip model config 'ViT-B-61'; did you mean 'ViT-B-16'"),
    ("unknown-clip-model-in-config", lambda t, w: _config(t, w, backbones=[{"name": "c", "spec": "clip:NoSuchModel"}]),
     "unknown open_clip model config 'NoSuchModel';"),
    ("unknown-eva-model", lambda t, w: ["run", "zeroshot-classification", "--backbone", "eva02:EVA02-B-61",
                                        "--dataset", _folder(w)], "unknown EVA-02 model 'EVA02-B-61'; did you mean"),
    ("unknown-uta-config", lambda t, w: ["run", "zeroshot-classification", "--backbone", "uta:tinyy",
                                         "--dataset", _folder(w)], "unknown UTA config 'tinyy'; did you mean 'tiny'"),
    ("template-other-field", _templates("a photo of a {c}.\na photo of {c} {x}.\n"),
     "templates.txt, line 2: 'a photo of {c} {x}.' has the field {x}; the only field a template may have is {c}"),
    ("template-stray-brace", _templates("a photo of {c}}.\n"),
     "templates.txt, line 1: 'a photo of {c}}.' Single '}' encountered"),
    ("template-positional", _templates("{0} of {c}\n"), "'{0} of {c}' has the field {0}"),
    ("template-without-class", _templates("a photo.\n"), "line 1: 'a photo.' has no {c}"),
    ("checkpoint-empty", _checkpoint(lambda p: p.write_bytes(b"")), "weights.pt is empty (0 bytes)"),
    ("checkpoint-random-bytes", _checkpoint(lambda p: p.write_bytes(bytes(range(7, 256)) * 4)),
     "weights.pt is not a checkpoint: neither a zip archive (torch.save), a pickle (legacy torch.save) nor "
     "safetensors"),
    ("checkpoint-truncated", _checkpoint(_truncated), "is a zip archive, torch.save's format, that is truncated"),
    ("checkpoint-truncated-legacy",
     _checkpoint(lambda p: p.write_bytes(pickle.dumps({"w": [0.0] * 100}, protocol=2)[:60])),
     "is a pickle, the legacy torch.save format, that is truncated or damaged"),
    ("checkpoint-pickled-code", _checkpoint(lambda p: torch.save({"w": _Code()}, p)),
     "holds pickled objects that are not tensors (posix.system), which utabench never unpickles"),
    ("broken-symlink-image", _dangling, "dangling.jpg cannot be read (a broken symlink); fix or remove it, or pass "
     "--skip-corrupt"),
]


@pytest.mark.parametrize("argv,message", [pytest.param(build, message, id=name) for name, build, message in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, world, capfd, argv, message):
    """...and nothing is written but the cache's file hashes: no record, folder or work directory, in the results
    or beside them, and no code of a checkpoint is run."""
    argv = argv(tmp_path, world)
    if argv[0] in ("run", "run-all") and "--results" not in argv:
        argv += ["--results", str(tmp_path / "results")]
    if argv[0] in ("run", "run-all", "pretrain"):
        argv += ["--cache-dir", str(tmp_path / "cache")]
    before = set(tmp_path.rglob("*"))
    assert main(argv) == 2
    written = [p for p in set(tmp_path.rglob("*")) - before if tmp_path / "cache" not in p.parents]
    assert written in ([], [tmp_path / "cache"]), written
    out, err = capfd.readouterr()
    err = err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("utabench: error: ") and message in err[0], err[0]
    assert len(err[0]) < 1000 and "weights_only=False" not in err[0], err[0]
    assert "ran code" not in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "o").exists()
    assert not (tmp_path / "cache" / "world").exists()  # refused before the world or a model was made


def test_empty_class_folder_is_refused(tmp_path, world, capsys):
    root = tmp_path / "imagenet"
    shutil.copytree(world / "imagenet", root)
    empty = sorted(p for p in (root / "val").iterdir() if p.is_dir())[3]
    for image in empty.iterdir():
        image.unlink()
    argv = _run("zeroshot-classification", f"imagenet:{root}", "--classes", str(world / "classes.json"),
                "--results", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"class folder {empty} has no images" in err[0]
    assert not (tmp_path / "results").exists()


def test_unwritable_results_are_refused_before_pretraining(tmp_path, world, capsys):
    """run-all checks the results directory before it generates a world or trains a model."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    argv = _config(tmp_path, world, backbones=[{"name": "s", "pretrain": _pretrain_yaml(tmp_path, world)}])
    assert main(argv + ["--results", str(blocker / "results"), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a directory" in err[0]
    assert not (tmp_path / "cache").exists()


def test_pretrain_runs_a_world_config_on_its_own(tmp_path, world):
    """`utabench pretrain --config world-student.yaml` resolves `{world}` and its `teacher: {pretrain: ...}` the way
    run-all does (shortened here through a config whose base is the bundled one)."""
    from utabench.core.configfile import bundled_config

    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(yaml.safe_dump({"base": str(bundled_config("pretrain/world-clip.yaml")),
                                       "optim": {"steps": 2, "batch_size": 8, "warmup_steps": 1}}))
    student = tmp_path / "student.yaml"
    student.write_text(yaml.safe_dump({"base": str(bundled_config("pretrain/world-student.yaml")),
                                       "teacher": {"pretrain": str(teacher)},
                                       "optim": {"steps": 2, "batch_size": 8, "warmup_steps": 1}}))
    out = tmp_path / "out"
    assert main(["pretrain", "uta", "--config", str(student), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--world", str(world), "--no-progress"]) == 0
    assert (out / "final.safetensors").is_file()
    assert list((tmp_path / "c" / "pretrain").glob("clip-*/final.json"))  # the teacher went into the cache
    student.write_text(student.read_text().replace("world-student.yaml", "missing.yaml"))
    assert main(["pretrain", "uta", "--config", str(student), "--out", str(out)]) == 2


@pytest.mark.parametrize("name", ["..", ".", "../../escaped", ".hidden", "/..", ":..", "a\0b", "a\nb", "tab\tname",
                                  "", "  ", "x" * 201])
def test_a_name_that_is_no_path_component_is_refused(name):
    from utabench.core.errors import UtabenchError
    from utabench.core.paths import path_component

    with pytest.raises(UtabenchError):
        path_component(name, "backbone name")


def test_names_map_to_one_component_each():
    from utabench.core.errors import UtabenchError
    from utabench.core.paths import distinct_components, path_component

    assert path_component("clip:ViT-B-16", "name") == "clip_ViT-B-16"
    assert path_component("UTA B/16 (ours)", "name") == "UTA_B_16_ours"
    assert path_component("x" * 200, "name") == "x" * 200
    assert distinct_components(["a", "b", "a"], "name") == {"a": "a", "b": "b"}
    with pytest.raises(UtabenchError, match="would both be stored as 'a_b'"):
        distinct_components(["a b", "a/b"], "name")


def test_every_help_renders(capsys):
    """`--help` of every sub-command and of every `run TASK` (a `%` in a generated help text once crashed it)."""
    import argparse

    from utabench.harness.cli import build_parser

    def commands(parser, words):
        yield words
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, words + [name])

    seen = list(commands(build_parser(), []))
    assert ["tables"] in seen and ["run", "detection"] in seen
    for words in seen:
        assert main(words + ["--help"]) == 0, words
        assert capsys.readouterr().out.startswith("usage: utabench"), words


def test_only_run_all_requests_carry_a_run_config():
    """`pretrain --config` names a pretraining YAML, not the run config a request carries (run-all's)."""
    from utabench.harness.cli import build_parser
    from utabench.harness.session import request_from_args

    parser = build_parser()
    pretrain = parser.parse_args(["pretrain", "uta", "--config", "p.yaml", "--out", "o", "--threads", "1"])
    assert pretrain.recipe == "p.yaml"
    assert request_from_args(pretrain).config is None and request_from_args(pretrain).flags == {"threads": 1}
    assert request_from_args(parser.parse_args(["run-all", "--config", "c.yaml"])).config == "c.yaml"


def test_a_broken_symlink_is_counted_as_a_skipped_image(tmp_path, world):
    """Under --skip-corrupt a broken image symlink is skipped and counted like a corrupt image, not dropped unseen."""
    from utabench.harness.store import load_results

    argv = _dangling(tmp_path, world) + ["--skip-corrupt", "--name", "clip-tiny", "--results", str(tmp_path / "r"),
                                         "--cache-dir", str(tmp_path / "cache"), "--no-feature-cache"]
    assert main(argv) == 0
    record = load_results(tmp_path / "r").iloc[0]
    entries = len(list((tmp_path / "folder").glob("*/*")))
    assert record["provenance.dataset.skipped_images"] == 1
    assert record["provenance.dataset.num_images"] == entries - 1


def test_a_name_that_shares_a_record_file_with_another_is_refused(tmp_path, world, capsys):
    """`clip tiny` and, in a later run, `clip/tiny` map to one folder: the second is refused, not skipped as done."""
    common = ["--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "cache"), "--no-feature-cache"]
    assert main(_run("zeroshot-classification", _folder(world), "--name", "clip tiny", *common)) == 0
    record = next((tmp_path / "r").rglob("*.json"))
    before = record.read_text()
    capsys.readouterr()
    assert main(_run("zeroshot-classification", _folder(world), "--name", "clip/tiny", *common)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the record of backbone 'clip tiny', which is stored under the same file name as " \
        "backbone 'clip/tiny'" in err[0], err
    assert record.read_text() == before
