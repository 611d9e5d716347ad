"""Frozen-encoder LLaVA: label masking, hosting in transformers' Llava, the two stages (frozen encoder, resume,
checkpoint formats), LLaVA-Bench reading, judges and scoring (against upstream's summarize_gpt_review.py), and the
bad-input messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from utabench.backbones.factory import build_backbone
from utabench.core.context import RunContext
from utabench.core.errors import UtabenchError
from utabench.datasets.llava import read_bench, read_bench_coco
from utabench.harness.cli import main
from utabench.llava.bench import review_answers
from utabench.llava.conversation import IGNORE_INDEX, encode
from utabench.llava.encoder import EncoderSpec
from utabench.llava.judge import OfflineJudge, OpenAIJudge, make_judge, parse_score, summarize
from utabench.llava.model import build, load_tokenizer
from utabench.llava.pipeline import load_finetuned, load_recipe, stage_config, train_stage
from utabench.llava.projector import build_projector, load_projector
from utabench.tasks.bootstrap import bootstrap_ci, point_metrics
from utabench.tasks.llava_bench import review_samples

TINY = {"stage1": {"optim": {"batch_size": 4, "epochs": 1, "warmup_steps": 1}},
        "stage2": {"optim": {"batch_size": 4, "epochs": 1, "warmup_steps": 1}},
        "generation": {"max_new_tokens": 6}, "checkpoint_every": 2}


def _llava(world, *parts):
    return str(Path(world, "llava", *parts))


def _stage_data(world, stage):
    folder = "pretrain" if stage == 1 else "instruct"
    name = "blip_laion_cc_sbu_558k.json" if stage == 1 else "llava_instruct_150k.json"
    return {"data": _llava(world, folder, name), "images": _llava(world, folder, "images")}


@pytest.fixture(scope="module")
def tokenizer(world):
    return load_tokenizer(_llava(world, "llm"))


def test_a_small_set_is_read_once_and_gives_the_same_samples(world, tokenizer, monkeypatch):
    from torchvision.transforms import ToTensor

    from utabench.llava import data

    def dataset():
        return data.ConversationSet(data.read_conversations(_stage_data(world, 1)["data"]),
                                    _stage_data(world, 1)["images"], ToTensor(), tokenizer, "plain", 999, 4, 64, "s1")

    memo = dataset()
    first = memo[0]
    assert memo[0] is first and list(memo._memo) == [0]  # kept, not read again
    monkeypatch.setattr(data, "MEMO_BYTES", 0)
    read = dataset()
    again = read[0]
    assert read[0] is not again and not read._memo
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_vicuna_v1_learns_only_the_answers_and_their_end(tokenizer):
    turns = [{"from": "human", "value": "What shapes are in the image?\n<image>"},
             {"from": "gpt", "value": "The image shows a red circle."},
             {"from": "human", "value": "What is the background?"}, {"from": "gpt", "value": "The background is gray."}]
    enc = encode("vicuna_v1", turns, tokenizer, image_token_id=999, num_image_tokens=5)
    assert enc.input_ids[0] == tokenizer.bos_token_id and enc.input_ids.count(999) == 5
    first = enc.input_ids.index(999)
    assert tokenizer.convert_ids_to_tokens(enc.input_ids[first - 2:first]) == ["USER", ":"]  # the image leads
    learned = [t if label != IGNORE_INDEX else None for t, label in zip(enc.input_ids, enc.labels)]
    assert all(label in (IGNORE_INDEX, t) for t, label in zip(enc.input_ids, enc.labels))
    spans, current = [], []
    for token in learned + [None]:
        if token is None and current:
            spans.append(current)
            current = []
        elif token is not None:
            current.append(token)
    assert [tokenizer.decode(s) for s in spans] == ["The image shows a red circle. </s>",
                                                    "The background is gray. </s>"]
    assert [s[-1] for s in spans] == [tokenizer.eos_token_id] * 2


def test_plain_learns_the_caption_only(tokenizer):
    turns = [{"from": "human", "value": "<image>\nDescribe the image concisely."},
             {"from": "gpt", "value": "a red circle on a gray background."}]
    enc = encode("plain", turns, tokenizer, image_token_id=999, num_image_tokens=3)
    assert enc.input_ids[:4] == [tokenizer.bos_token_id, 999, 999, 999]  # the prompt is dropped, as in LLaVA
    learned = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == "a red circle on a gray background."
    with pytest.raises(UtabenchError, match="exactly one <image>"):
        encode("plain", [{"from": "human", "value": "no image"}, turns[1]], tokenizer, 999, 3)
    with pytest.raises(UtabenchError, match="'human' then 'gpt'"):
        encode("vicuna_v1", [turns[0], turns[0]], tokenizer, 999, 3)


def test_llava_hosts_the_backbone_and_its_tokens(world):
    backbone = build_backbone({"spec": "uta:tiny"})
    hosted = build(backbone, EncoderSpec(layer=-2, select="patch"), "mlp2x_gelu", _llava(world, "llm"), torch.float32)
    assert type(hosted.model).__name__ == "LlavaForConditionalGeneration"
    assert hosted.model.model.vision_tower is hosted.encoder and hosted.num_image_tokens == 64
    images = torch.randn(2, 3, 64, 64)
    own = backbone.token_features(images, [-2])[0][:, 1:]  # second-to-last block, CLS dropped
    projected = hosted.model.get_image_features(pixel_values=images).pooler_output
    torch.testing.assert_close(torch.stack(list(projected)), hosted.projector(own))
    assert hosted.image_token_id == hosted.model.lm_head.out_features  # outside the vocabulary: never generated
    cls = build(backbone, EncoderSpec(layer=0, select="cls_patch"), "linear", _llava(world, "llm"), torch.float32)
    assert cls.num_image_tokens == 65
    with pytest.raises(UtabenchError, match="outside"):
        build(backbone, EncoderSpec(layer=4), "linear", _llava(world, "llm"), torch.float32)


def _ctx(tmp_path):
    return RunContext(device="cpu", batch_size=4, workers=0, cache_dir=tmp_path / "cache", progress=False)


def _stage(world, stage, backbone, init=None, **overrides):
    recipe = load_recipe("world", {**TINY, **overrides})
    return stage_config(recipe, stage, _stage_data(world, stage), backbone, _llava(world, "llm"), init)


def test_two_stages_keep_the_encoder_bit_identical(world, tmp_path):
    backbone = build_backbone({"spec": "uta:tiny"})
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    s1 = train_stage(_stage(world, 1, backbone), backbone, tmp_path / "stage1", _ctx(tmp_path), print)
    projector = s1 / "mm_projector.bin"
    state = torch.load(projector, weights_only=True)
    assert sorted(state) == ["model.mm_projector.0.bias", "model.mm_projector.0.weight", "model.mm_projector.2.bias",
                             "model.mm_projector.2.weight"]  # LLaVA's names and layout
    s2 = train_stage(_stage(world, 2, backbone, str(projector)), backbone, tmp_path / "stage2", _ctx(tmp_path), print)
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in backbone.parameters())
    config = json.loads((s2 / "config.json").read_text())
    assert config["mm_projector_type"] == "mlp2x_gelu" and config["mm_vision_select_layer"] == -1
    assert config["utabench"]["backbone"]["spec"] == "uta:tiny" and config["utabench"]["num_image_tokens"] == 65
    from safetensors import safe_open

    with safe_open(str(s2 / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert json.loads(f.metadata()["utabench"])["encoder"] == {"layer": -1, "select": "cls_patch"}
    assert "lm_head.weight" in keys and "model.embed_tokens.weight" in keys and not any("vision" in k for k in keys)
    from safetensors.torch import load_file

    start = load_file(_llava(world, "llm", "model.safetensors"))
    trained = load_file(str(s2 / "model.safetensors"))
    assert not torch.equal(start["model.embed_tokens.weight"], trained["model.embed_tokens.weight"])  # stage 2 trains it
    stage1_llm = build(backbone, EncoderSpec(), "mlp2x_gelu", _llava(world, "llm"), torch.float32, projector)
    fresh = build_projector("mlp2x_gelu", 64, stage1_llm.model.config.text_config.hidden_size)
    assert not torch.equal(stage1_llm.projector[0].weight, fresh[0].weight)
    # a rerun reuses both finished stages
    assert train_stage(_stage(world, 1, backbone), backbone, tmp_path / "stage1", _ctx(tmp_path),
                       lambda line: pytest.fail(line)) == s1


def test_stage_resumes_exactly_from_its_last_checkpoint(world, tmp_path):
    backbone = build_backbone({"spec": "uta:tiny"})
    cfg = _stage(world, 1, backbone)  # 16 pairs / batch 4: 4 steps, a checkpoint every 2
    straight = train_stage(cfg, backbone, tmp_path / "a", _ctx(tmp_path), print)
    resumed = tmp_path / "b"
    train_stage(cfg, backbone, resumed, _ctx(tmp_path), print)
    for name in ("final.json", "mm_projector.bin", "checkpoints/step-00000004.pt"):
        (resumed / name).unlink()  # as if stopped after step 2's checkpoint
    lines = []
    train_stage(cfg, backbone, resumed, _ctx(tmp_path), lines.append)
    assert any("resuming" in line and "step-00000002" in line for line in lines)
    a = torch.load(straight / "mm_projector.bin", weights_only=True)
    b = torch.load(resumed / "mm_projector.bin", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_matches_the_full_batch(world, tmp_path):
    """Two micro-batches of 2 give the step of one batch of 4 when every sample has as many learned tokens (the
    loss is a mean of micro-batch means)."""
    backbone = build_backbone({"spec": "uta:tiny"})
    records = json.loads(Path(_stage_data(world, 1)["data"]).read_text())
    for record, (color, shape) in zip(records, [(c, s) for c in ("red", "blue") for s in ("circle", "star", "cross",
                                                                                         "ring", "heart")] * 2):
        record["conversations"][1]["value"] = f"a {color} {shape}."
    data = {"data": str(tmp_path / "same_length.json"), "images": _stage_data(world, 1)["images"]}
    Path(data["data"]).write_text(json.dumps(records))
    recipe = load_recipe("world", TINY)
    full = stage_config(recipe, 1, data, backbone, _llava(world, "llm"), None)
    accum = stage_config(load_recipe("world", {**TINY, "stage1": {"optim": {**TINY["stage1"]["optim"],
                                                                            "grad_accum": 2}}}),
                         1, data, backbone, _llava(world, "llm"), None)
    a = torch.load(train_stage(full, backbone, tmp_path / "full", _ctx(tmp_path), print) / "mm_projector.bin",
                   weights_only=True)
    b = torch.load(train_stage(accum, backbone, tmp_path / "accum", _ctx(tmp_path), print) / "mm_projector.bin",
                   weights_only=True)
    start = build_projector("mlp2x_gelu", 64, 64)
    assert not torch.equal(start[0].weight, a["model.mm_projector.0.weight"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_a_batch_whose_labels_are_all_ignored_stops_training(world, tmp_path):
    backbone = build_backbone({"spec": "uta:tiny"})
    cfg = _stage(world, 1, backbone, max_length=66)  # BOS + 65 image tokens (CLS and patches): every caption is cut off
    with pytest.raises(UtabenchError, match="every label of a batch is ignored"):
        train_stage(cfg, backbone, tmp_path / "s", _ctx(tmp_path), print)
    with pytest.raises(UtabenchError, match="cuts into the image"):
        train_stage(_stage(world, 1, backbone, max_length=30), backbone, tmp_path / "t", _ctx(tmp_path), print)


def test_original_mm_projector_bin_loads(tmp_path):
    linear = {"model.mm_projector.weight": torch.randn(32, 16), "model.mm_projector.bias": torch.randn(32)}
    torch.save(linear, tmp_path / "mm_projector.bin")  # what LLaVA v1's stage 1 saves
    projector = build_projector("linear", 16, 32)
    load_projector(projector, tmp_path / "mm_projector.bin")
    assert torch.equal(projector.weight, linear["model.mm_projector.weight"])
    with pytest.raises(UtabenchError, match="does not fit"):
        load_projector(build_projector("mlp2x_gelu", 16, 32), tmp_path / "mm_projector.bin")


def _original_llava_folder(world, folder: Path, backbone, width: int) -> None:
    """A stage-2 folder as the original LLaVA code saves one: llava_llama config with mm_* keys, .bin weights."""
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(_llava(world, "llm"))
    state = {f"{k}": v for k, v in llm.state_dict().items()}
    state["model.mm_projector.weight"] = torch.randn(llm.config.hidden_size, width) * 0.02
    state["model.mm_projector.bias"] = torch.zeros(llm.config.hidden_size)
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    config = {**llm.config.to_dict(), "model_type": "llava_llama", "architectures": ["LlavaLlamaForCausalLM"],
              "mm_vision_tower": "openai/clip-vit-large-patch14", "mm_hidden_size": width, "mm_projector_type": "linear",
              "mm_vision_select_layer": -2, "mm_use_im_start_end": False}
    (folder / "config.json").write_text(json.dumps(config))
    load_tokenizer(_llava(world, "llm")).save_pretrained(str(folder))


def test_original_llava_checkpoint_loads_and_answers(world, tmp_path):
    backbone = build_backbone({"spec": "uta:tiny"})
    _original_llava_folder(world, tmp_path / "llava-v1", backbone, 64)
    hosted = load_finetuned(backbone, tmp_path / "llava-v1", torch.float32)
    assert isinstance(hosted.projector, torch.nn.Linear) and hosted.encoder.spec.layer == -2
    bench = read_bench(_llava(world, "bench"))
    from utabench.llava.bench import generate_answers

    answers = generate_answers(hosted, bench, tmp_path / "answers.jsonl", "m", "cpu", RunContext().autocast, 5, 0.0)
    assert len(answers) == len(bench.questions) and all(set(a) >= {"question_id", "text", "answer_id"} for a in answers)
    other = build_backbone({"spec": "uta:world"})  # width 64 too, but 36 tokens: fine without a recorded count
    load_finetuned(other, tmp_path / "llava-v1", torch.float32)
    _original_llava_folder(world, tmp_path / "narrow", backbone, 32)
    with pytest.raises(UtabenchError, match="width 32"):
        load_finetuned(backbone, tmp_path / "narrow", torch.float32)


def test_a_checkpoint_refuses_an_encoder_with_another_token_count(world, tmp_path):
    backbone = build_backbone({"spec": "uta:tiny"})
    s1 = train_stage(_stage(world, 1, backbone), backbone, tmp_path / "stage1", _ctx(tmp_path), print)
    s2 = train_stage(_stage(world, 2, backbone, str(s1 / "mm_projector.bin")), backbone, tmp_path / "stage2",
                     _ctx(tmp_path), print)
    load_finetuned(backbone, s2, torch.float32)
    with pytest.raises(UtabenchError, match=r"expands each <image> to 65 tokens, but uta:world gives 37"):
        load_finetuned(build_backbone({"spec": "uta:world"}), s2, torch.float32)


# ---- judges and scores -----------------------------------------------------------------------------------------

def _upstream_summarize(review_file: Path) -> dict:
    """Run LLaVA's own llava/eval/summarize_gpt_review.py (from the llava-torch wheel set-up downloads)."""
    wheels = sorted((Path(sys.prefix) / "upstream").glob("llava_torch-*.whl"))
    assert wheels, "the llava-torch wheel is missing from .venv/upstream: run scripts/setup.sh"
    script = review_file.parent / "summarize_gpt_review.py"
    with zipfile.ZipFile(wheels[0]) as wheel:
        script.write_bytes(wheel.read("llava/eval/summarize_gpt_review.py"))
    out = subprocess.run([sys.executable, str(script), "-f", str(review_file)], capture_output=True, text=True,
                         check=True).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            rows[parts[0]] = [float(x) for x in parts[1:]]
    return rows


def test_scores_equal_upstream_summarize_gpt_review(tmp_path):
    rng = np.random.default_rng(0)
    reviews = []
    for i in range(60):
        category = ("llava_bench_conv", "llava_bench_detail", "llava_bench_complex")[i % 3]
        pair = [float(rng.integers(5, 11)), float(rng.integers(1, 11)) + (0.5 if i % 7 == 0 else 0.0)]
        reviews.append({"id": i + 1, "question_id": i, "category": category, "tuple": pair, "content": "x"})
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reviews))
    upstream = _upstream_summarize(path)
    ours = summarize(reviews)
    samples = review_samples(reviews, list(range(60)))
    for key, name in (("llava_bench_conv", "conversation"), ("llava_bench_detail", "detail"),
                      ("llava_bench_complex", "complex"), ("all", "overall")):
        assert [ours[name], ours[f"{name}_reference_x10"], ours[f"{name}_model_x10"]] == upstream[key], key
        assert ours[f"{name}_parse_failures"] == 0
        assert point_metrics(samples)[name] == pytest.approx(upstream[key][0], abs=0.051)  # unrounded
    # the intervals: questions resampled, each category's score over its drawn questions, written out
    ref, model = np.array([r["tuple"][0] for r in reviews]), np.array([r["tuple"][1] for r in reviews])
    category = np.arange(60) % 3
    rng, stats = np.random.default_rng(0), {name: [] for name in ("conversation", "detail", "complex", "overall")}
    for _ in range(200):
        drawn = rng.integers(0, 60, size=60)
        for c, name in enumerate(("conversation", "detail", "complex")):
            mine = drawn[category[drawn] == c]
            stats[name].append(100.0 * model[mine].sum() / ref[mine].sum())
        stats["overall"].append(100.0 * model[drawn].sum() / ref[drawn].sum())
    expected = {name: pytest.approx(list(np.percentile(values, [2.5, 97.5])), rel=1e-12)
                for name, values in stats.items()}
    assert bootstrap_ci(samples, resamples=200) == expected
    assert samples["ids"].tolist() == list(range(60))


def test_parse_failures_are_counted_and_left_out(tmp_path):
    assert parse_score("8 7\nbecause") == (8.0, 7.0) and parse_score("8,7") == (8.0, 7.0)
    assert parse_score("Assistant 1: 8") is None and parse_score("8  7") is None
    good = [{"question_id": i, "category": "llava_bench_conv", "tuple": [8, 6]} for i in range(3)]
    bad = [{"question_id": 9, "category": "llava_bench_conv", "tuple": [-1, -1]}]
    scores = summarize(good + bad)
    assert scores["conversation"] == 75.0 and scores["conversation_parse_failures"] == 1
    assert scores["overall_parse_failures"] == 1
    kept = review_samples(good + bad, [0, 1, 2, 9])
    assert kept["ids"].tolist() == [0, 1, 2] and point_metrics(kept) == {"conversation": 75.0, "overall": 75.0}
    path = tmp_path / "with_failure.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good + bad))
    assert _upstream_summarize(path)["all"][0] == pytest.approx(100 * 4.25 / 5.75, abs=0.05)  # upstream averages -1 in


def test_offline_judge_says_what_it_is(world, tmp_path):
    bench = read_bench(_llava(world, "bench"))
    answers = [{"question_id": q["question_id"], "text": bench.references[q["question_id"]]["text"] if i % 2 else
                "unclear", "answer_id": f"m-{i}"} for i, q in enumerate(bench.questions)]
    reviews = review_answers(bench, answers, OfflineJudge(), tmp_path / "reviews.jsonl")
    assert [r["tuple"][1] for r in reviews[1::2]] == [10.0] * len(reviews[1::2])  # the reference itself scores 10
    assert all(r["tuple"][1] == 1.0 for r in reviews[::2])
    assert all("not GPT-4" in r["content"] for r in reviews)
    assert {r["category"] for r in reviews} == {"llava_bench_conv", "llava_bench_detail", "llava_bench_complex"}


class _Endpoint(BaseHTTPRequestHandler):
    replies: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.headers.get("Authorization"), body))
        status, content = type(self).replies.pop(0) if type(self).replies else (200, "9 7\nfine")
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Endpoint.replies, _Endpoint.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_judge_retries_and_never_writes_the_key(world, tmp_path, endpoint, monkeypatch, capsys):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    _Endpoint.replies = [(500, ""), (429, ""), (200, "not a score\nsorry")]
    judge = make_judge({"type": "openai", "model": "gpt-4-0314", "base_url": endpoint, "api_key_env": "JUDGE_KEY",
                        "backoff": 0.01})
    bench = read_bench(_llava(world, "bench"))
    answers = [{"question_id": q["question_id"], "text": "an answer", "answer_id": f"m-{i}"}
               for i, q in enumerate(bench.questions)]
    out = tmp_path / "reviews.jsonl"
    reviews = review_answers(bench, answers, judge, out)
    assert reviews[0]["tuple"] == [-1, -1] and all(r["tuple"] == [9.0, 7.0] for r in reviews[1:])
    assert summarize(reviews)["overall_parse_failures"] == 1
    assert len(_Endpoint.seen) == len(bench.questions) + 2  # two retried failures
    auth, body = _Endpoint.seen[-1]
    assert auth == "Bearer sk-secret-123" and body["model"] == "gpt-4-0314"
    assert body["messages"][1]["content"].startswith("[Context]\n") and "[Assistant 2]\nan answer" in body["messages"][1]["content"]
    assert "sk-secret" not in out.read_text() + capsys.readouterr().out
    with pytest.raises(UtabenchError, match="api_key_env"):
        make_judge({"type": "openai", "model": "m", "base_url": endpoint, "api_key": "sk-secret-123"})


def test_openai_judge_down_or_unparsable_is_one_clear_error(world, tmp_path, endpoint, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    down = OpenAIJudge("gpt-4", "http://127.0.0.1:9/v1", api_key_env="JUDGE_KEY", max_retries=2, backoff=0.01,
                       timeout=2)
    with pytest.raises(UtabenchError, match=r"did not answer after 3 tries .*ConnectionError") as err:
        down.review("x")
    assert "sk-secret" not in str(err.value)
    bench = read_bench(_llava(world, "bench"))
    answers = [{"question_id": q["question_id"], "text": "a", "answer_id": "m"} for q in bench.questions]
    _Endpoint.replies = [(200, "I cannot score this")] * len(bench.questions)
    judge = OpenAIJudge("gpt-4", endpoint, api_key_env="JUDGE_KEY", backoff=0.01)
    with pytest.raises(UtabenchError, match="no parsable score"):
        review_answers(bench, answers, judge, tmp_path / "r.jsonl")
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(UtabenchError, match="JUDGE_KEY"):
        OpenAIJudge("gpt-4", endpoint, api_key_env="JUDGE_KEY")


def test_malformed_jsonl_names_the_line(world, tmp_path):
    import shutil

    bench = tmp_path / "bench"
    shutil.copytree(_llava(world, "bench"), bench)
    lines = (bench / "questions.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]
    (bench / "questions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UtabenchError, match=r"questions\.jsonl:3: not a JSON object"):
        read_bench(bench)
    data = tmp_path / "train.json"
    data.write_text('[\n{"id": 1, "image": "a.jpg", "conversations": []},\n{"id": 2,,}\n]')
    from utabench.llava.data import read_conversations

    with pytest.raises(UtabenchError, match=r"train\.json:3: not valid JSON"):
        read_conversations(data)


def _cli(world, tmp_path, *extra):

    recipe = tmp_path / "tiny-recipe.yaml"
    recipe.write_text(yaml.safe_dump({k: v for k, v in load_recipe("world", TINY).items() if k != "source"}))
    return main(["run", "llava-bench", "--backbone", "uta:tiny", "--dataset", f"llava-bench:{_llava(world, 'bench')}",
                 "--recipe", str(recipe), "--results", str(tmp_path / "r"), "--threads", "2", "--no-progress", *extra])


def test_bad_llava_input_is_one_line(world, tmp_path, capsys):
    stages = ["--stage1", f"{_stage_data(world, 1)['data']}:{_stage_data(world, 1)['images']}",
              "--stage2", f"{_stage_data(world, 2)['data']}:{_stage_data(world, 2)['images']}"]
    assert _cli(world, tmp_path, "--llm", str(tmp_path / "no-llm"), *stages) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "LLM path" in err and "no-llm" in err
    assert _cli(world, tmp_path, "--llm", _llava(world, "llm"), "--stage1", "x.json") == 2
    assert "JSON:IMAGES" in capsys.readouterr().err
    assert _cli(world, tmp_path, "--llm", _llava(world, "llm"), *stages, "--judge", "openai") == 2
    assert "judge.model" in capsys.readouterr().err
    assert not list((tmp_path / "r").rglob("*.json")) if (tmp_path / "r").exists() else True


def test_run_llava_bench_end_to_end_and_table3(world, tmp_path, capsys):
    stages = ["--stage1", f"{_stage_data(world, 1)['data']}:{_stage_data(world, 1)['images']}",
              "--stage2", f"{_stage_data(world, 2)['data']}:{_stage_data(world, 2)['images']}"]
    assert _cli(world, tmp_path, "--llm", _llava(world, "llm"), *stages, "--paper", "UTA B/16@224 2B",
                "--batch-size", "3") == 0
    assert "Loading weights" not in capsys.readouterr().err  # transformers' bars are off with utabench's
    record = json.loads((tmp_path / "r" / "uta_tiny" / "llava-bench" / "llava-bench.json").read_text())
    assert record["status"] == "complete"
    assert set(record["metrics"]) == {"conversation", "detail", "complex", "overall", "parse_failures"}
    assert record["provenance"]["task_details"]["judge"] == "offline-word-f1"
    assert not record["provenance"]["task_details"]["judge_comparable_to_paper"]
    assert 10.0 <= record["metrics"]["overall"] <= 100.0
    assert set(record["ci"]) == {"conversation", "detail", "complex", "overall"}  # questions resampled
    low, high = record["ci"]["overall"]
    assert low - 0.05 <= record["metrics"]["overall"] <= high + 0.05  # the record's score is rounded to 0.1
    # how its numbers were made: each stage at the recipe's batch and precision, answers one question at a time
    recipe = load_recipe("world", TINY)
    assert record["provenance"]["training"] == {
        f"stage{n}": {"batch_size": recipe[f"stage{n}"]["optim"]["batch_size"], "precision": "fp32", "device": "cpu",
                      "world_size": 1, "grad_accum": recipe[f"stage{n}"]["optim"]["grad_accum"]} for n in (1, 2)}
    assert record["provenance"]["evaluation"]["batch_size"] == 1 and recipe["precision"] == "fp32"
    capsys.readouterr()
    assert main(["tables", "--results", str(tmp_path / "r"), "--table", "3"]) == 0
    table = capsys.readouterr().out
    assert "### Table 3" in table and "offline-word-f1" in table and "GPT-4" in table
    row = next(line for line in table.splitlines() if line.startswith("| uta:tiny"))
    assert re.search(r"\|\s+[\d.]+ \[[\d.]+, [\d.]+\]\s+\|", row)  # ours and its interval
    paper = next(line for line in table.splitlines() if "↳ paper: UTA B/16" in line)
    assert "80.8" in paper and "78.8" in paper


@pytest.mark.slow
def test_torchrun_two_processes_train_the_same_llava(world, tmp_path):
    """Both stages under torchrun (2 gloo processes, half of each batch apiece) train what one process trains, and
    rank 0 alone answers and reviews. Every sample has as many learned tokens, so the mean of the two ranks' means
    is the one-process mean."""
    import os

    from safetensors.torch import load_file

    pairs = [(c, s) for c in ("red", "blue") for s in ("circle", "star", "cross", "ring", "heart", "square")] * 2
    stages = []
    for stage in (1, 2):
        records = json.loads(Path(_stage_data(world, stage)["data"]).read_text())[:8]
        for record, (color, shape) in zip(records, pairs):
            question = "<image>\nDescribe the image concisely."
            record["conversations"] = [{"from": "human", "value": question}, {"from": "gpt", "value": f"a {color} {shape}."}]
        path = tmp_path / f"stage{stage}.json"
        path.write_text(json.dumps(records))
        stages += [f"--stage{stage}", f"{path}:{_stage_data(world, stage)['images']}"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({k: v for k, v in load_recipe("world", TINY).items() if k != "source"}))
    common = ["-m", "utabench.harness.cli", "run", "llava-bench", "--backbone", "uta:tiny", "--dataset",
              f"llava-bench:{_llava(world, 'bench')}", "--recipe", str(recipe), "--llm", _llava(world, "llm"), *stages,
              "--threads", "1", "--device", "cpu", "--no-progress", "--results"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, *common, str(tmp_path / "one")], env=env, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            *common, str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    work = Path("uta_tiny", "llava-bench", "llava-bench.work")
    for name in ("stage1/mm_projector.bin", "stage2/model.safetensors"):
        read = (lambda p: torch.load(p, weights_only=True)) if name.endswith(".bin") else load_file
        one, two = read(tmp_path / "one" / work / name), read(tmp_path / "two" / work / name)
        assert one.keys() == two.keys()
        for key in one:
            # the two ranks' gradients are summed in another order: up to 1.8e-5 apart on a 2-core Xeon (2026-12-02)
            torch.testing.assert_close(one[key], two[key], atol=1e-4, rtol=1e-3)
    records = [json.loads(p.read_text()) for p in (tmp_path / "two").glob("*/*/*.json")]
    provenance = records[0]["provenance"]
    assert len(records) == 1 and provenance["training"]["stage1"]["world_size"] == 2 == \
        provenance["training"]["stage2"]["world_size"]
    assert provenance["evaluation"]["world_size"] == 1  # the answers are generated on rank 0, one at a time
    answers = list((tmp_path / "two" / work).glob("answers-*.jsonl"))
    assert len(answers) == 1 and len(answers[0].read_text().splitlines()) == len(read_bench(_llava(world, "bench")).questions)


# ---- LLaVA-Bench (COCO) ---------------------------------------------------------------------------------------

def _coco_bench(world, root: Path) -> Path:
    """The world's bench in the official LLaVA-Bench (COCO) files: qa90 questions and GPT-4 answers (no answer_id),
    captions-and-boxes context, bare-category rules, val2014 images named COCO_val2014_<id>.jpg."""
    wild = read_bench(_llava(world, "bench"))
    (root / "val2014").mkdir(parents=True)
    names = {}
    for i, image in enumerate(sorted({q["image"] for q in wild.questions})):
        names[image] = f"{441147 + i:012d}.jpg"
        (root / "val2014" / f"COCO_val2014_{names[image]}").write_bytes((wild.root / "images" / image).read_bytes())
    questions = [{**q, "image": names[q["image"]]} for q in wild.questions]
    answers = [{k: v for k, v in wild.references[q["question_id"]].items() if k != "answer_id"} for q in questions]
    context = [{"id": name[:-4], "image": name, "captions": [wild.captions[image], "another caption."],
                "instances": [{"category": "shape", "bbox": [0.167, 0.025, 0.989, 1.0]},
                              {"category": "ground", "bbox": [0.0, 0.5, 1.0, 1.0]}]} for image, name in names.items()]
    rule = {c: {"role": "Assistant", "prompt": f"Rate the {c} answers. \nFirst line: two scores."} for c in
            ("conv", "detail", "complex")}
    for name, rows in (("qa90_questions.jsonl", questions), ("qa90_gpt4_answer.jsonl", answers),
                       ("caps_boxes_coco2014_val_80.jsonl", context)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "rule.json").write_text(json.dumps(rule))
    return root


class _Scripted:
    name, comparable, note = "scripted", True, ""

    def __init__(self):
        self.seen = []

    def review(self, content):
        self.seen.append(content)
        return "8 6\nok"


FAKE_OPENAI = '''
import json, os
class error:
    class RateLimitError(Exception):
        pass
class ChatCompletion:
    @staticmethod
    def create(model, messages, temperature, max_tokens):
        with open(os.environ["FAKE_OPENAI_LOG"], "a") as handle:
            handle.write(json.dumps(messages[1]["content"]) + "\\n")
        return {"choices": [{"message": {"content": "8 6\\nok"}}]}
'''


def test_coco_variant_reviews_and_scores_equal_upstream(world, tmp_path):
    """The judge's prompt (captions, then one `category: [box]` line per object), the review rows and the scores
    equal what LLaVA's own eval_gpt_review_visual.py and summarize_gpt_review.py make of the same files."""
    bench = read_bench_coco(_coco_bench(world, tmp_path / "coco"))
    assert bench.variant == "coco" and bench.category_prefix == ""
    answers = [{"question_id": q["question_id"], "prompt": q["text"], "text": f"answer {i}", "answer_id": f"m-{i}",
                "model_id": "m", "metadata": {}} for i, q in enumerate(bench.questions)]
    judge = _Scripted()
    ours = review_answers(bench, answers, judge, tmp_path / "ours.jsonl")
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    (tmp_path / "openai.py").write_text(FAKE_OPENAI)
    wheels = sorted((Path(sys.prefix) / "upstream").glob("llava_torch-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        (tmp_path / "eval_gpt_review_visual.py").write_bytes(wheel.read("llava/eval/eval_gpt_review_visual.py"))
    root = tmp_path / "coco"
    env = {"PYTHONPATH": str(tmp_path), "FAKE_OPENAI_LOG": str(tmp_path / "prompts.jsonl"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(tmp_path / "eval_gpt_review_visual.py"),
                    "-q", str(root / "qa90_questions.jsonl"), "-c", str(root / "caps_boxes_coco2014_val_80.jsonl"),
                    "-a", str(root / "qa90_gpt4_answer.jsonl"), str(tmp_path / "answers.jsonl"),
                    "-r", str(root / "rule.json"), "-o", str(tmp_path / "theirs.jsonl")],
                   env=env, check=True, capture_output=True, cwd=tmp_path)
    prompts = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert judge.seen == prompts and "shape: [0.167, 0.025, 0.989, 1.0]\nground: [0.0, 0.5, 1.0, 1.0]" in prompts[0]
    theirs = [json.loads(line) for line in (tmp_path / "theirs.jsonl").read_text().splitlines()]
    fields = ("id", "question_id", "answer1_id", "answer2_id", "category", "tuple", "content")
    assert [[r[f] for f in fields] for r in ours] == [[r[f] for f in fields] for r in theirs]
    upstream, scores = _upstream_summarize(tmp_path / "theirs.jsonl"), summarize(ours)
    for key, name in (("conv", "conversation"), ("detail", "detail"), ("complex", "complex"), ("all", "overall")):
        assert [scores[name], scores[f"{name}_reference_x10"], scores[f"{name}_model_x10"]] == upstream[key], key


def test_run_llava_bench_coco_records_its_variant(world, tmp_path, capsys):
    root = _coco_bench(world, tmp_path / "coco")
    stages = ["--stage1", f"{_stage_data(world, 1)['data']}:{_stage_data(world, 1)['images']}",
              "--stage2", f"{_stage_data(world, 2)['data']}:{_stage_data(world, 2)['images']}"]
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({k: v for k, v in load_recipe("world", TINY).items() if k != "source"}))
    assert main(["run", "llava-bench", "--backbone", "uta:tiny", "--dataset", f"llava-bench-coco:{root}",
                 "--recipe", str(recipe), "--llm", _llava(world, "llm"), *stages, "--paper", "UTA B/16@224 2B",
                 "--results", str(tmp_path / "r"), "--threads", "2", "--no-progress"]) == 0
    record = json.loads((tmp_path / "r" / "uta_tiny" / "llava-bench" / "llava-bench-coco.json").read_text())
    assert record["provenance"]["task_details"]["variant"] == "coco"
    assert not list((tmp_path / "r").rglob("checkpoints"))  # the stages' training states went with the record
    capsys.readouterr()
    assert main(["tables", "--results", str(tmp_path / "r"), "--table", "3"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| uta:tiny"))
    assert "| coco " in row and "no Δ: judged by offline-word-f1, not GPT-4" in table


def test_the_task_reports_the_stages_setups_as_they_trained_and_its_generation(world, tmp_path):
    """TaskOutput.training holds each stage's setup from the recipe (not the run's --batch-size / --precision), read
    back from the stage's final.json when a finished stage is reused; the evaluation is one question at a time."""
    from conftest import llava_entry

    from utabench.core.context import Setup
    from utabench.core.registry import TASKS

    accum = {**TINY, "stage1": {"optim": {**TINY["stage1"]["optim"], "grad_accum": 2}}}
    task = TASKS.get("llava-bench")()
    entry = llava_entry(world, overrides=accum)
    data, options = task.load(entry), task.options_of(entry)
    ctx = RunContext(device="cpu", batch_size=3, workers=0, cache_dir=tmp_path / "cache", progress=False,
                     work_dir=tmp_path / "work")
    backbone = build_backbone({"spec": "uta:tiny"})
    expected = {"stage1": Setup(4, "fp32", "cpu", 1, 2), "stage2": Setup(4, "fp32", "cpu", 1, 1)}
    out = task.run(backbone, data, ctx, options)
    assert out.training == expected and out.evaluation == Setup(1, "fp32", "cpu", 1)
    assert task.run(backbone, data, ctx, options).training == expected  # reused stages: their recorded setups
    final = ctx.work_dir / "stage1" / "final.json"
    meta = json.loads(final.read_text())
    del meta["setup"]  # a stage finished before setups were recorded
    final.write_text(json.dumps(meta))
    assert task.run(backbone, data, ctx, options).training == {"stage2": expected["stage2"]}
