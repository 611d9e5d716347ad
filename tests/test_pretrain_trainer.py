"""Pretraining end to end on the small world: exact resume, refusals of bad input, export as a `uta` backbone,
webdataset input, the step sampler's sharding and the FLOP counts of the four objectives."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from utabench.backbones.factory import build_backbone
from utabench.core.errors import UtabenchError
from utabench.harness.cli import main
from utabench.pretrain.config import build_config
from utabench.pretrain.run import build_recipe, pretrain
from utabench.training.sampler import StepSampler
from utabench.training.trainer import Trainer

TEACHER = {"spec": "clip:utabench-clip-world", "seed": 1}


def _cfg(world, **over):
    raw = {"objective": "uta", "student": {"model": "world", "drop_path": 0.1}, "teacher": TEACHER,
           "data": {"type": "imagefolder", "root": str(world / "imagenet" / "train")},
           "mask": {"type": "block-r", "ratio": 0.5, "min_block": 4},
           "optim": {"batch_size": 8, "steps": 6, "warmup_steps": 2, "lr": 1e-3}, "checkpoint_every": 3,
           "workers": 0}
    for key, value in over.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return build_config(raw)


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("uta-run")
    meta = pretrain(_cfg(world), out, progress=False, log=lambda _: None)
    return out, meta


def test_resume_continues_exactly(world, finished, tmp_path):
    out, _ = finished
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step-00000003.pt", "step-00000006.pt"]
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(out / "checkpoints" / "step-00000003.pt", tmp_path / "checkpoints")
    shutil.copy(out / "log.jsonl", tmp_path / "log.jsonl")  # as a run killed after logging step 6 would leave it
    logs = []
    pretrain(_cfg(world, workers=2), tmp_path, progress=False, log=logs.append)  # loader workers do not matter
    assert any("resuming" in line and "step 3" in line for line in logs)
    a, b = load_file(out / "final.safetensors"), load_file(tmp_path / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_a = torch.load(out / "checkpoints" / "step-00000006.pt", weights_only=True)
    state_b = torch.load(tmp_path / "checkpoints" / "step-00000006.pt", weights_only=True)
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in state_a["optimizer"]["state"].values()]
    moments_b = [(s["exp_avg"], s["exp_avg_sq"]) for s in state_b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for pair_a, pair_b in zip(moments, moments_b) for x, y in zip(pair_a, pair_b))
    assert torch.equal(state_a["rng"]["torch"], state_b["rng"]["torch"])
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp_path / "final.safetensors", tmp_path / "final.json", tmp_path / "checkpoints" / "step-00000006.pt"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path  # results directories are shared
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [6]


def test_export_loads_as_a_uta_backbone_with_the_teachers_text(world, finished, tmp_path, capsys):
    out, meta = finished
    assert meta["backbone"] == {"spec": "uta:world", "checkpoint": str(out / "final.safetensors")}
    assert meta["flops"]["student_per_image"] > 0
    student = build_backbone(meta["backbone"])
    teacher = build_backbone(TEACHER)
    assert student.zero_shot_ready
    tokens = teacher.tokenize(["a photo of a star.", "a red circle"])
    assert torch.allclose(student.encode_text(student.tokenize(["a photo of a star.", "a red circle"])),
                          teacher.encode_text(tokens), atol=1e-6)
    x = torch.randn(2, 3, 48, 48)
    assert torch.allclose(student.joint_tokens(x)[:, 0], student.encode_image(x), atol=1e-5)
    code = main(["run", "zeroshot-classification", "--backbone", "uta:world", "--checkpoint",
                 meta["backbone"]["checkpoint"], "--dataset", f"imagenet:{world / 'imagenet'}", "--classes",
                 str(world / "classes.json"), "--results", str(tmp_path / "res"), "--cache-dir", str(tmp_path),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    (path,) = (tmp_path / "res").glob("*/zeroshot-classification/imagenet.json")
    record = json.loads(path.read_text())
    assert record["status"] == "complete"


def test_final_json_records_the_setup_and_run_all_passes_it_on(world, finished, tmp_path):
    """The trainer records how it trained beside the run fingerprint (which the setup does not enter), and the
    `pretrain` info of a resolved backbone entry carries it."""
    import yaml

    from utabench.core.context import RunContext
    from utabench.pretrain.resolve import PretrainedResolver
    from utabench.training.fingerprint import run_fingerprint

    out, meta = finished
    assert meta["setup"] == {"batch_size": 8, "precision": "fp32", "device": "cpu", "world_size": 1, "grad_accum": 1}
    assert meta["fingerprint"] == run_fingerprint(meta["config"]) == run_fingerprint(_cfg(world))
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in meta["config"].items() if v is not None}))
    ctx = RunContext(device="cpu", cache_dir=tmp_path / "cache", progress=False)
    shutil.copytree(out, ctx.cache_dir / "pretrain" / f"uta-{meta['fingerprint']}")  # the cached run: no training
    resolved = PretrainedResolver(ctx, None, log=lambda _: None).resolve_entry({"pretrain": str(config)})
    assert resolved["pretrain"]["setup"] == meta["setup"]
    # a student of this backbone holds this entry as its teacher, and its fingerprint covers the info: a key added
    # for every run would change every such student's fingerprint (the ablations add theirs only when set)
    assert set(resolved["pretrain"]) == {"objective", "config", "steps", "flops", "teacher", "paper", "init", "setup"}


def test_resume_from_another_configuration_is_refused(world, finished, tmp_path, capsys):
    out, _ = finished
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "checkpoints" / "step-00000003.pt", tmp_path / "run" / "checkpoints")
    with pytest.raises(UtabenchError, match=r"another configuration \(differs in mask.ratio\)"):
        pretrain(_cfg(world, mask={"ratio": 0.25}), tmp_path / "run", progress=False, log=lambda _: None)
    assert not (tmp_path / "run" / "final.json").exists()


class _NanAt:
    def __init__(self, recipe, step):
        self.recipe, self.step, self.calls = recipe, step, 0
        self.module, self.dataset = recipe.module, recipe.dataset

    def loss(self, model, batch, device):
        self.calls += 1
        loss = self.recipe.loss(model, batch, device)
        return loss * float("nan") if self.calls == self.step else loss

    def export(self, out_dir, steps):
        raise AssertionError("a failed run must not export")


def test_nan_loss_stops_with_the_step_number_and_saves_nothing_of_it(world, tmp_path):
    cfg = _cfg(world, checkpoint_every=1)
    trainer = Trainer(cfg, _NanAt(build_recipe(cfg, "cpu", None), 3), tmp_path, progress=False, log=lambda _: None)
    with pytest.raises(UtabenchError, match=r"the loss became nan at step 3;.*step-00000002\.pt"):
        trainer.run()
    assert [p.name for p in sorted((tmp_path / "checkpoints").glob("*.pt"))] == ["step-00000001.pt", "step-00000002.pt"]
    assert not (tmp_path / "final.json").exists() and not list(tmp_path.glob("final.*"))


def test_teacher_without_joint_tokens_is_refused(world):
    image_only = {"spec": "eva02:eva02_tiny_patch14_224", "image_size": 42}
    with pytest.raises(UtabenchError, match="cannot teach: .*no per-token features in a joint image-text space"):
        build_recipe(_cfg(world, teacher=image_only), "cpu", None)


def test_teacher_grid_and_width_must_match_the_student(world):
    with pytest.raises(UtabenchError, match="student's grid is 6x6"):
        build_recipe(_cfg(world, teacher={"spec": "clip:utabench-clip-tiny"}), "cpu", None)


def test_empty_image_directory_is_refused(world, tmp_path, capsys):
    cfg = tmp_path / "empty.yaml"
    (tmp_path / "nothing").mkdir()
    cfg.write_text(json.dumps({"student": {"model": "world"}, "teacher": TEACHER,
                               "data": {"type": "imagefolder", "root": str(tmp_path / "nothing")}}))
    assert main(["pretrain", "uta", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no images" in err[0] and "ImageFolder" in err[0]
    cfg.write_text(json.dumps({"student": {"model": "world"}, "teacher": TEACHER, "mask": {"ratio": 1.0},
                               "data": {"type": "imagefolder", "root": str(world / "imagenet" / "train")}}))
    assert main(["pretrain", "uta", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "mask.ratio: Input should be less than 1 (got 1.0)" in capsys.readouterr().err


def test_students_read_webdataset_shards_and_teachers_train_on_pairs(world, tmp_path):
    shards = str(world / "pairs" / "pairs-{00000..00000}.tar")
    meta = pretrain(_cfg(world, data={"type": "webdataset", "shards": shards}, optim={"steps": 2}), tmp_path / "s",
                    progress=False, log=lambda _: None)
    assert meta["steps"] == 2
    clip = build_config({"objective": "clip", "model": "utabench-clip-world", "data": {"type": "webdataset",
                         "shards": shards}, "optim": {"batch_size": 8, "steps": 2, "lr": 1e-3}, "workers": 0})
    meta = pretrain(clip, tmp_path / "c", progress=False, log=lambda _: None)
    teacher = build_backbone(meta["backbone"])
    assert teacher.zero_shot_ready and teacher.info.input_size == 48


def test_step_sampler_shards_each_global_batch_over_ranks():
    single = list(StepSampler(40, 8, seed=0, start_step=0, total_steps=10))
    ranks = [list(StepSampler(40, 8, seed=0, start_step=0, total_steps=10, rank=r, world_size=2)) for r in range(2)]
    for step in range(10):
        batch = single[step * 8:(step + 1) * 8]
        assert sorted(ranks[0][step * 4:(step + 1) * 4] + ranks[1][step * 4:(step + 1) * 4]) == sorted(batch)
    assert {e for _, e in single} == {0, 1}  # 5 steps per epoch
    assert [i for i, _ in single[:40]] != [i for i, _ in single[40:]]  # a new order each epoch
    assert list(StepSampler(40, 8, 0, 7, 10)) == single[56:]


def test_uta_step_costs_about_the_kept_fraction_of_fd(world):
    flops = {}
    for objective in ("uta", "mim", "fd", "uta+mim"):
        from utabench.pretrain.flops import step_flops

        flops[objective] = step_flops(build_recipe(_cfg(world, objective=objective), "cpu", None), 4)
    fd = flops["fd"]["student"]
    assert flops["mim"]["student"] == pytest.approx(fd, rel=0.02)
    assert flops["uta+mim"]["student"] == pytest.approx(fd, rel=0.02)
    assert 0.45 < flops["uta"]["student"] / fd < 0.6  # 18 of 36 patches + CLS
    assert flops["uta"]["teacher"] == flops["fd"]["teacher"] > 0


def test_teacher_token_cache_is_written_once_and_read_bit_identically(world, finished, tmp_path, monkeypatch):
    """`teacher_cache: true`: the first run writes each epoch it saw in full (40 images / batch 8: epoch 0 of the 6
    steps), a run of another objective reads it and skips the teacher there; the weights of both equal uncached runs."""
    from utabench.pretrain.distill import DistillRecipe

    calls = []
    original = DistillRecipe.teacher_tokens
    monkeypatch.setattr(DistillRecipe, "teacher_tokens", lambda self, images: calls.append(len(images)) or
                        original(self, images))
    runs = tmp_path / "runs"
    pretrain(_cfg(world, teacher_cache=True), runs / "uta", progress=False, log=lambda _: None)
    stored = sorted((runs / "teacher-tokens").glob("*/*.safetensors"))
    assert [p.name for p in stored] == ["epoch-00000-rank-0.safetensors"]
    assert load_file(stored[0])["tokens"].shape[0] == 40
    a, b = load_file(finished[0] / "final.safetensors"), load_file(runs / "uta" / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # writing the cache changes nothing

    calls.clear()
    cached = pretrain(_cfg(world, objective="mim", teacher_cache=True), runs / "mim", progress=False, log=lambda _: None)
    assert sum(calls) == 2 * 4 + 8  # the FLOP count's 4 images (twice) and step 6 (epoch 1); steps 1-5 read epoch 0
    plain = pretrain(_cfg(world, objective="mim"), tmp_path / "mim-plain", progress=False, log=lambda _: None)
    assert cached["flops"] == plain["flops"]  # counted with the teacher running
    a, b = load_file(tmp_path / "mim-plain" / "final.safetensors"), load_file(runs / "mim" / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    calls.clear()  # another seed crops otherwise: its own key, the teacher runs every step
    pretrain(_cfg(world, objective="mim", teacher_cache=True, seed=1), runs / "mim-1", progress=False,
             log=lambda _: None)
    assert sum(calls) == 2 * 4 + 6 * 8 and len(list((runs / "teacher-tokens").iterdir())) == 2


def test_teacher_cache_is_for_distillation_only(world):
    with pytest.raises(UtabenchError, match="teacher_cache applies to distillation"):
        build_config({"objective": "clip", "model": "utabench-clip-world", "teacher_cache": True,
                      "data": {"type": "imagefolder", "root": str(world)}})


def test_small_sources_are_decoded_once_and_give_the_same_samples(world, monkeypatch):
    from utabench.pretrain import data

    records = data.index_imagefolder(str(world / "imagenet" / "train"))
    kept = data.PretrainImages(records, 32, seed=0)
    items = [kept[(i, epoch)] for epoch in (0, 1) for i in range(len(records))]
    assert len(kept._decoded) == len(records)  # the world's 40 images fit: decoded once, read twice
    monkeypatch.setattr(data, "KEEP_DECODED_BYTES", 40 * 80 * 64 * 3 - 1)  # one byte short: decoded at every read
    fresh = data.PretrainImages(records, 32, seed=0)
    again = [fresh[(i, epoch)] for epoch in (0, 1) for i in range(len(records))]
    assert not fresh._decoded
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(items, again))


def test_memoised_captions_tokenise_as_the_tokenizer_does_and_the_memo_is_bounded():
    from open_clip.tokenizer import SimpleTokenizer

    from utabench.pretrain.tokens import MemoTokenizer

    plain = SimpleTokenizer(context_length=16)
    memo = MemoTokenizer(plain, rows=2)
    batches = [["a photo of a star.", "a red ring", "a photo of a star."],
               ["a red ring", "an arrow pointing left, drawn on a very long caption that is cut at sixteen tokens"],
               ["a photo of a star.", "a blue heart", "a red ring"]]
    for batch in batches:
        assert torch.equal(memo(batch), plain(batch))
    assert memo._row.cache_info().currsize == 2 and memo._row.cache_info().hits >= 2
