"""The backbone interface every adapter implements, and the spec that builds one.

A backbone gives: the eval image transform, `encode_image` into the joint image-text space, `tokenize` and
`encode_text` where a text tower exists, per-token features of chosen blocks, per-token features in the joint
space (what a pretraining teacher gives), the trunk of its ViT image tower for dense prediction and fine-tuning
(`vision_trunk`, see trunk.py), and metadata.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from pydantic import NonNegativeInt, PositiveInt
from torch import nn

from utabench.backbones.trunk import Trunk
from utabench.core.errors import NotApplicable, UtabenchError
from utabench.core.schema import Schema


class ImageOptions(Schema):
    """Options every backbone family takes (keys of its YAML entry, or `--option KEY=VALUE`)."""

    image_size: Optional[PositiveInt] = None  # input resolution (position embeddings resized); default: the config's
    seed: NonNegativeInt = 0  # seeds the random initialisation when no checkpoint is given


@dataclass
class BackboneSpec:
    """What to build: `family:model` plus weights and options (from a spec string or a YAML entry)."""

    family: str
    model: str
    checkpoint: Optional[str] = None
    name: Optional[str] = None  # the key results are stored under; defaults to `family:model`
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.name or f"{self.family}:{self.model}"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class BackboneInfo:
    family: str
    model: str
    params: int
    patch_size: int
    input_size: int
    width: int  # token feature width
    depth: int  # number of transformer blocks
    embed_dim: Optional[int]  # joint-space width; None for image-only encoders
    num_prefix_tokens: int
    has_text: bool
    weights: str  # checkpoint path or "random-init(seed=N)"
    weights_sha256: Optional[str] = None


class Backbone(nn.Module):
    """Base class; subclasses set `self.info` and implement the hooks below."""

    info: BackboneInfo
    spec: BackboneSpec

    def image_transform(self) -> Callable:
        raise NotImplementedError

    def normalisation(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """The mean and std of the eval transform's Normalize step (what a recipe that feeds its own pixels uses)."""
        for step in getattr(self.image_transform(), "transforms", []):
            if hasattr(step, "mean") and hasattr(step, "std"):
                return tuple(float(m) for m in step.mean), tuple(float(s) for s in step.std)
        raise UtabenchError(f"{self.spec.key}: its image transform has no Normalize step to take mean/std from")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotApplicable(f"{self.spec.key} has no joint image-text embedding (image-only encoder)")

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotApplicable(f"{self.spec.key} has no text tower; pair it with one to run zero-shot tasks")

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotApplicable(f"{self.spec.key} has no text tower; pair it with one to run zero-shot tasks")

    def token_features(self, images: torch.Tensor, blocks: Sequence[int]) -> List[torch.Tensor]:
        """Per-token outputs (B, prefix + H*W, width) of the given blocks (0-based; negative counts from the end)."""
        raise NotImplementedError

    def joint_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Every output token (CLS first, then the H*W patches) after the final norm and the projection into the
        joint image-text space: (B, 1 + H*W, embed_dim). Its CLS row equals `encode_image`. A pretraining teacher
        must give these."""
        raise NotApplicable(f"{self.spec.key} gives no per-token features in a joint image-text space")

    def vision_tower(self) -> nn.Module:
        """The ViT image tower itself (the module the backbone runs)."""
        raise NotApplicable(f"{self.spec.key} has no ViT image tower")

    def vision_trunk(self) -> Trunk:
        """The `Trunk` of a trainable copy of the ViT image tower: what dense prediction and fine-tuning run (the
        backbone itself stays as it is)."""
        raise NotApplicable(f"{self.spec.key} has no ViT image tower")

    def text_state(self) -> Dict[str, torch.Tensor]:
        """The tensors that determine `encode_text`; fingerprinted for the text-classifier cache."""
        raise NotApplicable(f"{self.spec.key} has no text tower")

    def text_fingerprint(self) -> str:
        """sha256 over the text tower's weights and the tokenizer's output for a probe string (computed once:
        built backbones are frozen)."""
        if getattr(self, "_text_fingerprint", None) is None:
            self._text_fingerprint = self._hash_text_tower()
        return self._text_fingerprint

    def _hash_text_tower(self) -> str:
        digest = hashlib.sha256(type(self).__name__.encode())
        digest.update(self.tokenize(["a photo of a {}."]).numpy().tobytes())
        for name, tensor in sorted(self.text_state().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def weights_fingerprint(self) -> str:
        """sha256 over the class, the spec and every tensor of the state (the bytes as stored, any dtype or device),
        computed once: what the image-feature cache keys a backbone by."""
        if getattr(self, "_weights_fingerprint", None) is None:
            digest = hashlib.sha256(type(self).__name__.encode())
            digest.update(repr(sorted(self.spec.to_dict().items())).encode())
            for name, tensor in sorted(self.state_dict().items()):
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._weights_fingerprint = digest.hexdigest()
        return self._weights_fingerprint

    @property
    def zero_shot_ready(self) -> bool:
        return self.info.embed_dim is not None and self.info.has_text


def count_params(*modules: nn.Module) -> int:
    seen, total = set(), 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def resolve_blocks(blocks: Sequence[int], depth: int) -> List[int]:
    return [b % depth for b in blocks]


def open_trunk(backbone: Backbone, purpose: str) -> Trunk:
    """`backbone.vision_trunk()`, refused in one line (naming `purpose`) where there is none or where it does not
    have the shape the backbone's info gives (what the dense necks and the fine-tuning head are sized by)."""
    key = backbone.spec.key
    try:
        trunk = backbone.vision_trunk()
    except NotApplicable as exc:
        raise UtabenchError(f"{key} cannot {purpose}: {exc}") from None
    if not isinstance(trunk, Trunk):
        raise UtabenchError(f"{key} cannot {purpose}: its vision_trunk() gives a {type(trunk).__name__}, not a "
                            "utabench.backbones.trunk.Trunk")
    info = backbone.info
    wrong = [f"{what} {mine} (its info says {said})" for what, mine, said in (
        ("patch size", trunk.patch_size, info.patch_size), ("width", trunk.width, info.width),
        ("depth", trunk.depth, info.depth)) if mine != said]
    if wrong:
        raise UtabenchError(f"{key} cannot {purpose}: its tower has {', '.join(wrong)}")
    return trunk
