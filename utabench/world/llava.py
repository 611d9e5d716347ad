"""The embedded world's LLaVA sets, in the original LLaVA on-disk formats, and its tiny language model.

- `llava/pretrain/blip_laion_cc_sbu_558k.json` + `images/`: stage-1 image-caption pairs as one-turn conversations,
  named as LLaVA-1.5's stage-1 file (its current release's layout); the paper's stage 1 used LLaVA v1's CC-3M set
  (`chat.json`, 595K pairs), which has the same format.
- `llava/instruct/llava_instruct_150k.json` + `images/`: stage-2 instruction data in LLaVA-Instruct's three kinds
  (multi-turn conversation, detailed description, complex reasoning).
- `llava/bench/`: a LLaVA-Bench (In-the-Wild) layout: `questions.jsonl`, `context.jsonl` (what the judge is told
  about each image), `answers_gpt4.jsonl` (reference answers; here the generator's ground truth), `rule.json` (the
  judge's instructions per category) and `images/`.
- `llava/llm/`: a few-layer LLaMA with a word-level tokenizer built from the world's own vocabulary, saved as a
  transformers model directory (config.json, model.safetensors, tokenizer.json). As LLaVA starts from a trained
  Vicuna, it is first trained, text only, on the training sets' captions and chats (never the bench's), so what
  LLaVA's two stages add is the image.

All answers are generated from the scene geometry, so they are true of the image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from utabench.core.threads import cpu_threads
from utabench.datasets.llava import CATEGORIES, VICUNA_SYSTEM
from utabench.world.phrasing import where_in_image
from utabench.world.scene import SHAPES, Scene, render

BRIEF_PROMPTS = ("Describe the image concisely.", "Give a brief description of the image.",
                 "Render a clear and concise summary of the photo.", "What is in the photo?")
DETAIL_PROMPTS = ("Describe the image in detail.", "Describe the following image.",
                  "What do you see happening in this image?")
SYSTEM_WORDS = VICUNA_SYSTEM + " USER: ASSISTANT:"  # the tiny LLM's vocabulary covers LLaVA's conversations


# how each shape is drawn: the complex questions' answers, which only an encoder that tells the shapes apart gets right
SHAPE_DRAWN = {"circle": "one round line with no corners", "square": "four equal sides and four right angles",
               "triangle": "three straight sides and three corners", "star": "five sharp points",
               "cross": "two bars that cross in the middle", "ring": "a round band with a hole in the middle",
               "diamond": "a square standing on one corner", "hexagon": "six straight sides",
               "arrow": "a bar with a pointed head", "heart": "two round lobes above one point"}
SHAPE_QUESTION = "What shape is in the image?"
COMPLEX_QUESTION = "What shape is this, and how is it drawn?"


def caption(scene: Scene) -> str:
    obj = scene.objects[0]
    return f"a {obj.color} {obj.shape} on a {scene.background} background."


def detail(scene: Scene) -> str:
    obj = scene.objects[0]
    return (f"The image shows a {obj.color} {obj.shape} on a {scene.background} background. The {obj.shape} is at "
            f"the {where_in_image(obj, scene.size)} of the image.")


def conversation(scene: Scene, rng: np.random.Generator) -> List[Tuple[str, str]]:
    """The shape question first (the later ones name the shape), then two or three more in a drawn order."""
    obj = scene.objects[0]
    more = [(f"What colour is the {obj.shape}?", f"It is {obj.color}."),
            (f"Where is the {obj.shape}?", f"At the {where_in_image(obj, scene.size)} of the image."),
            ("What is the background?", f"It is {scene.background}.")]
    order = rng.permutation(len(more))[: int(rng.integers(1, 4))]
    return [(SHAPE_QUESTION, f"A {obj.shape}.")] + [more[k] for k in order]


def reasoning(scene: Scene) -> Tuple[str, str]:
    shape = scene.objects[0].shape
    return COMPLEX_QUESTION, f"It is a {shape}: {SHAPE_DRAWN[shape]}."


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
                     sample_scene: Callable[[np.random.Generator, int], Scene],
                     counts: Dict[str, int]) -> Tuple[List[str], List[str]]:
    """Write the three LLaVA sets under root/llava; returns every text written (for the tokenizer's vocabulary)
    and the training sets' documents, text only (for the language model's own training)."""
    base = root / "llava"
    texts: List[str] = [SYSTEM_WORDS, *BRIEF_PROMPTS, *DETAIL_PROMPTS]
    documents: List[str] = []
    pretrain = []
    for i in range(counts["llava_pretrain"]):
        r = rng("llava_pretrain", i)
        scene = sample_scene(r, int(r.integers(len(SHAPES))))
        name = _image(base, "pretrain", f"{i:06d}.jpg", scene, r)
        prompt, text = BRIEF_PROMPTS[i % len(BRIEF_PROMPTS)], caption(scene)
        pretrain.append({"id": f"{i:06d}", "image": name, "conversations": _turns([(prompt, text)])})
        texts.append(text)
        documents.append(text)
    (base / "pretrain" / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(pretrain))
    instruct = []
    for i in range(counts["llava_instruct"]):
        r = rng("llava_instruct", i)
        scene = sample_scene(r, int(r.integers(len(SHAPES))))
        name = _image(base, "instruct", f"{i:06d}.jpg", scene, r)
        kind = CATEGORIES[i % 3]
        pairs = {"conv": lambda: conversation(scene, r),
                 "detail": lambda: [(DETAIL_PROMPTS[i // 3 % len(DETAIL_PROMPTS)], detail(scene))],
                 "complex": lambda: [reasoning(scene)]}[kind]()
        instruct.append({"id": f"{i:06d}", "image": name, "conversations": _turns(pairs)})
        texts += [t for pair in pairs for t in pair]
        documents.append(_chat(pairs))
    (base / "instruct" / "llava_instruct_150k.json").write_text(json.dumps(instruct))
    questions, context, answers = [], [], []
    for i in range(counts["llava_bench"]):
        r = rng("llava_bench", i)
        scene = sample_scene(r, i % len(SHAPES))  # every shape as often
        name = _image(base, "bench", f"{i + 1:03d}.jpg", scene, r)
        context.append({"id": f"{i + 1:03d}", "image": name, "caption": detail(scene)})
        for kind, (question, answer) in (("conv", conversation(scene, r)[0]),
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
    return texts, documents


def _chat(pairs: Sequence[Tuple[str, str]]) -> str:
    """A conversation as LLaVA's vicuna_v1 template lays it out, without the image."""
    return VICUNA_SYSTEM + " " + "".join(f"USER: {q} ASSISTANT: {a}</s>" for q, a in pairs)


def judge_rules() -> Dict[str, Dict[str, str]]:
    """The judge's instructions per LLaVA-Bench category, in rule.json's layout (`llava_bench_<category>`)."""
    ask = ("Two AI assistants answered the user's question about the image described above. Rate how helpful, "
           "relevant, accurate and detailed each answer is, on a scale of 1 to 10 where higher is better. "
           "Output a first line that holds only the two scores, for Assistant 1 and Assistant 2, separated by a "
           "space. On the following lines, explain your rating without letting the order of the answers sway you.")
    focus = {"conv": "", "detail": " Judge the completeness of the description.",
             "complex": " Judge the soundness of the reasoning."}
    return {f"llava_bench_{c}": {"role": "Assistant", "prompt": ask + focus[c]} for c in CATEGORIES}


def write_tiny_llm(folder: Path, texts: Sequence[str], documents: Sequence[str], seed: int) -> None:
    """A 2-layer LLaMA and a word-level tokenizer over `texts` (plus <unk>, <s>, </s>, <pad>), the model trained as
    a language model on `documents`, as a transformers model directory any `AutoModelForCausalLM` /
    `AutoTokenizer` reads."""
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
        _train_lm(model, tokenizer, documents)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


LM_EPOCHS, LM_BATCH, LM_LR = 5, 32, 3e-3


def _train_lm(model, tokenizer, documents: Sequence[str]) -> None:
    """Next-token training on random batches of `documents` (LM_EPOCHS passes' worth), on one thread (the same bits
    on any machine); the caller seeds torch."""
    import torch

    encoded = [[tokenizer.bos_token_id] + tokenizer(d, add_special_tokens=False)["input_ids"] for d in documents]
    if not encoded:
        return
    steps = -(-LM_EPOCHS * len(encoded) // LM_BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LM_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / steps)))
    with cpu_threads(1):
        model.train()
        for _ in range(steps):
            batch = [encoded[k] for k in torch.randint(len(encoded), (LM_BATCH,)).tolist()]
            width = max(map(len, batch))
            ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in batch])
            mask = ids != tokenizer.pad_token_id
            loss = model(input_ids=ids, attention_mask=mask.long(), labels=ids.masked_fill(~mask, -100)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
