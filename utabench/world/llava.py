"""The embedded world's LLaVA sets, in the original LLaVA on-disk formats, and its tiny language model.

- `llava/pretrain/blip_laion_cc_sbu_558k.json` + `images/`: stage-1 image-caption pairs as one-turn conversations.
- `llava/instruct/llava_instruct_150k.json` + `images/`: stage-2 instruction data in LLaVA-Instruct's three kinds
  (multi-turn conversation, detailed description, complex reasoning).
- `llava/bench/`: a LLaVA-Bench (In-the-Wild) layout: `questions.jsonl`, `context.jsonl` (what the judge is told
  about each image), `answers_gpt4.jsonl` (reference answers; here the generator's ground truth), `rule.json` (the
  judge's instructions per category) and `images/`.
- `llava/llm/`: a few-layer LLaMA (random init, seeded) with a word-level tokenizer built from the world's own
  vocabulary, saved as a transformers model directory (config.json, model.safetensors, tokenizer.json).

All answers are generated from the scene geometry, so they are true of the image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from utabench.datasets.llava import CATEGORIES, VICUNA_SYSTEM
from utabench.world.phrasing import join_phrases, where_in_image
from utabench.world.scene import Scene, render

BRIEF_PROMPTS = ("Describe the image concisely.", "Give a brief description of the image.",
                 "Render a clear and concise summary of the photo.", "What is in the photo?")
DETAIL_PROMPTS = ("Describe the image in detail.", "Describe the following image.",
                  "What do you see happening in this image?")
SYSTEM_WORDS = VICUNA_SYSTEM + " USER: ASSISTANT:"  # the tiny LLM's vocabulary covers LLaVA's conversations
_SIZES = ("small", "medium", "large")


def _things(scene: Scene) -> str:
    return join_phrases([f"a {o.color} {o.shape}" for o in scene.objects])


def caption(scene: Scene) -> str:
    return f"{_things(scene)} on a {scene.background} background."


def detail(scene: Scene) -> str:
    n = len(scene.objects)
    count = {1: "one shape", 2: "two shapes", 3: "three shapes"}[n]
    parts = [f"The image shows {count} on a {scene.background} background."]
    for obj in scene.objects:
        parts.append(f"A {obj.color} {obj.shape} is at the {where_in_image(obj, scene.size)} of the image.")
    return " ".join(parts)


def conversation(scene: Scene, rng: np.random.Generator) -> List[Tuple[str, str]]:
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    return [("What shapes are in the image?", f"The image shows {_things(scene)}."),
            (f"What colour is the {obj.shape}?", f"The {obj.shape} is {obj.color}."),
            (f"Where is the {obj.shape}?", f"The {obj.shape} is at the {where_in_image(obj, scene.size)} of the image."),
            ("What is the background?", f"The background is {scene.background}.")][: int(rng.integers(2, 5))]


def reasoning(scene: Scene) -> Tuple[str, str]:
    largest = max(scene.objects, key=lambda o: o.radius)
    n = len(scene.objects)
    if n == 1:
        return ("How many shapes are there, and which one is the largest?",
                f"There is only one shape, a {largest.color} {largest.shape}, so it is the largest.")
    return ("How many shapes are there, and which one is the largest?",
            f"There are {['', 'one', 'two', 'three'][n]} shapes. The {largest.color} {largest.shape} is the largest, "
            "so it stands out the most.")


def _turns(pairs: Sequence[Tuple[str, str]]) -> List[Dict[str, str]]:
    turns = []
    for i, (question, answer) in enumerate(pairs):
        turns.append({"from": "human", "value": f"<image>\n{question}" if i == 0 else question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def _image(root: Path, folder: str, name: str, scene: Scene, rng) -> str:
    path = root / folder / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    render(scene, "photo", rng).save(path, format="JPEG", quality=90)
    return name


def _jsonl(path: Path, rows: List[Dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_llava_sets(root: Path, rng: Callable[[str, int], np.random.Generator],
                     sample_scene: Callable[[np.random.Generator], Scene], counts: Dict[str, int]) -> List[str]:
    """Write the three LLaVA sets under root/llava; returns every text written (for the tokenizer's vocabulary)."""
    base = root / "llava"
    texts: List[str] = [SYSTEM_WORDS, *BRIEF_PROMPTS, *DETAIL_PROMPTS]
    pretrain = []
    for i in range(counts["llava_pretrain"]):
        r = rng("llava_pretrain", i)
        scene = sample_scene(r)
        name = _image(base, "pretrain", f"{i:06d}.jpg", scene, r)
        prompt = BRIEF_PROMPTS[i % len(BRIEF_PROMPTS)]
        pretrain.append({"id": f"{i:06d}", "image": name, "conversations": _turns([(prompt, caption(scene))])})
        texts.append(caption(scene))
    (base / "pretrain" / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(pretrain))
    instruct = []
    for i in range(counts["llava_instruct"]):
        r = rng("llava_instruct", i)
        scene = sample_scene(r)
        name = _image(base, "instruct", f"{i:06d}.jpg", scene, r)
        kind = CATEGORIES[i % 3]
        pairs = {"conv": lambda: conversation(scene, r),
                 "detail": lambda: [(DETAIL_PROMPTS[i % len(DETAIL_PROMPTS)], detail(scene))],
                 "complex": lambda: [reasoning(scene)]}[kind]()
        instruct.append({"id": f"{i:06d}", "image": name, "conversations": _turns(pairs)})
        texts += [t for pair in pairs for t in pair]
    (base / "instruct" / "llava_instruct_150k.json").write_text(json.dumps(instruct))
    questions, context, answers = [], [], []
    for i in range(counts["llava_bench"]):
        r = rng("llava_bench", i)
        scene = sample_scene(r)
        name = _image(base, "bench", f"{i + 1:03d}.jpg", scene, r)
        context.append({"id": f"{i + 1:03d}", "image": name, "caption": detail(scene)})
        for kind, (question, answer) in (("conv", conversation(scene, r)[1]),
                                         ("detail", (DETAIL_PROMPTS[0], detail(scene))),
                                         ("complex", reasoning(scene))):
            qid = len(questions)
            questions.append({"image": name, "text": question, "category": kind, "question_id": qid})
            answers.append({"question_id": qid, "prompt": question, "text": answer, "answer_id": f"ref-{qid}",
                            "model_id": "world-ground-truth", "metadata": {}})
            texts += [question, answer]
    _jsonl(base / "bench" / "questions.jsonl", questions)
    _jsonl(base / "bench" / "context.jsonl", context)
    _jsonl(base / "bench" / "answers_gpt4.jsonl", answers)
    (base / "bench" / "rule.json").write_text(json.dumps(judge_rules(), indent=1))
    return texts


def judge_rules() -> Dict[str, Dict[str, str]]:
    """The judge's instructions per LLaVA-Bench category, in rule.json's layout (`llava_bench_<category>`)."""
    ask = ("Two AI assistants answered the user's question about the image described above. Rate how helpful, "
           "relevant, accurate and detailed each answer is, on a scale of 1 to 10 where higher is better. "
           "Output a first line that holds only the two scores, for Assistant 1 and Assistant 2, separated by a "
           "space. On the following lines, explain your rating without letting the order of the answers sway you.")
    focus = {"conv": "", "detail": " Judge the completeness of the description.",
             "complex": " Judge the soundness of the reasoning."}
    return {f"llava_bench_{c}": {"role": "Assistant", "prompt": ask + focus[c]} for c in CATEGORIES}


def write_tiny_llm(folder: Path, texts: Sequence[str], seed: int) -> None:
    """A 2-layer LLaMA and a word-level tokenizer over `texts` (plus <unk>, <s>, </s>, <pad>), as a transformers
    model directory any `AutoModelForCausalLM` / `AutoTokenizer` reads."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for text in texts for w, _ in pre.pre_tokenize_str(text)})
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces and glues punctuation back on
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>", model_max_length=256)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
