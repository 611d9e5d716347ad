"""Host a frozen encoder, a projector and a causal LM in transformers' `LlavaForConditionalGeneration`.

transformers builds Llava's towers from configs; here its vision tower is our `FrozenEncoder` (any registered
backbone), its projector LLaVA's `linear` / `mlpNx_gelu` with the original names, and its language model the
one loaded from a local path (any `AutoModelForCausalLM`, e.g. Vicuna / LLaMA). Llava's own `forward` and
`generate` then do the rest: they run the encoder on `pixel_values`, project, and scatter the features into the
positions of the image placeholder id.

The placeholder id is the LLM's vocabulary size, one past its last token, so the tokenizer and the LLM's weights
stay exactly as they are (checkpoints stay in the original layout, and nothing can generate the placeholder); a
pre-hook on the input embedding maps it to a valid row, whose value Llava then overwrites with image features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from utabench.core.errors import UtabenchError
from utabench.llava.encoder import FrozenEncoder
from utabench.llava.projector import build_projector, load_projector


@dataclass
class HostedLlava:
    model: nn.Module  # LlavaForConditionalGeneration
    tokenizer: object
    encoder: FrozenEncoder
    projector: nn.Module
    image_token_id: int

    @property
    def num_image_tokens(self) -> int:
        return self.encoder.num_tokens

    def trained_modules(self, stage: int) -> nn.ModuleDict:
        """What a stage trains: the projector (stage 1), the projector and the LLM (stage 2)."""
        parts = {"projector": self.projector}
        if stage == 2:
            parts.update(language_model=self.model.model.language_model, lm_head=self.model.lm_head)
        return nn.ModuleDict(parts)


def llm_dtype(name: str, device: str) -> torch.dtype:
    """`auto`: bf16 on GPU, fp32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise UtabenchError(f"llm_dtype {name!r}: choose auto, {', '.join(dtypes)}")
    return dtypes[name]


def load_tokenizer(path: str | Path, config=None):
    """The LLM's fast tokenizer (`config`: the LLM's config, where the folder's config.json is LLaVA's)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **({"config": config} if config is not None else {}))
    except (OSError, ValueError) as exc:
        raise UtabenchError(f"no tokenizer could be read from {path} ({str(exc).splitlines()[0]}); expected the "
                            "LLM's directory with tokenizer.json or tokenizer.model beside config.json") from None
    if not tokenizer.is_fast:
        raise UtabenchError(f"the tokenizer in {path} is not a fast tokenizer; utabench needs one (tokenizer.json) "
                            "to align labels with the conversation text")
    if tokenizer.pad_token_id is None:  # LLaMA / Vicuna ship none; LLaVA pads with unk
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_llm(path: str | Path, dtype: torch.dtype):
    """A causal LM and its tokenizer from a local transformers directory."""
    from transformers import AutoModelForCausalLM

    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise UtabenchError(f"LLM path {path} has no config.json; expected a local transformers model directory "
                            "(config.json, weights, tokenizer), e.g. vicuna-7b-v1.5; set the dataset's `llm`")
    try:
        llm = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise UtabenchError(f"the LLM in {path} could not be loaded as a causal LM ({str(exc).splitlines()[0]})") from None
    return llm, load_tokenizer(path)


def host(encoder: FrozenEncoder, projector: nn.Module, llm: nn.Module, tokenizer) -> HostedLlava:
    """Llava with our encoder, projector and LLM in place of the towers its config would build."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    vocab = llm.get_input_embeddings().num_embeddings
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=encoder.width, num_hidden_layers=1, num_attention_heads=1,
                                       intermediate_size=1, patch_size=encoder.patch_size),
        text_config=llm.config, image_token_id=vocab, image_seq_length=encoder.num_tokens,
        vision_feature_layer=-1, vision_feature_select_strategy="full",
    )
    with torch.device("meta"):  # every tower is replaced below; nothing is allocated twice
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = encoder
    model.model.multi_modal_projector = projector
    model.model.language_model = llm.get_decoder()
    model.lm_head = llm.get_output_embeddings()
    model.generation_config = llm.generation_config
    left = [name for name, p in model.named_parameters() if p.is_meta]
    if left:
        raise UtabenchError(f"hosting the LLM in Llava left parameters unset: {', '.join(left[:4])}")
    embed = model.get_input_embeddings()
    embed.register_forward_pre_hook(lambda module, args: (args[0].clamp(max=module.num_embeddings - 1),))
    return HostedLlava(model=model, tokenizer=tokenizer, encoder=encoder, projector=projector, image_token_id=vocab)


def build(backbone, encoder_spec, projector_type: str, llm_path: str | Path, dtype: torch.dtype,
          projector_path: Optional[str | Path] = None) -> HostedLlava:
    """Stage-1 start: a fresh (or given) projector between the frozen encoder and the LLM from `llm_path`."""

    encoder = FrozenEncoder(backbone, encoder_spec)
    llm, tokenizer = load_llm(llm_path, dtype)
    projector = build_projector(projector_type, encoder.width, llm.config.hidden_size)
    if projector_path:
        load_projector(projector, projector_path)
    return host(encoder, projector, llm, tokenizer)
