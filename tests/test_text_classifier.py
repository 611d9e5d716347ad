"""The zero-shot text classifier: normalised template means, cached by (text weights, class names, templates)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from utabench.backbones import build_backbone
from utabench.tasks import text_classifier


def test_classifier_columns_are_normalised_template_means(ctx):
    backbone = build_backbone("clip:utabench-clip-tiny")
    templates = ["a photo of a {c}.", "art of the {c}"]
    weights = text_classifier.zero_shot_classifier(backbone, ["circle", "star"], templates, ctx)
    with torch.no_grad():
        emb = backbone.encode_text(backbone.tokenize(["a photo of a star.", "art of the star"]))
    mean = F.normalize(emb, dim=-1).mean(0)
    assert weights.shape == (64, 2)
    assert torch.allclose(weights[:, 1], mean / mean.norm(), atol=1e-6)


def test_cache_hit_and_key_changes(ctx, monkeypatch):
    backbone = build_backbone("clip:utabench-clip-tiny")
    first = text_classifier.zero_shot_classifier(backbone, ["circle"], ["a {c}"], ctx)
    assert len(list((ctx.cache_dir / "classifiers").glob("*.safetensors"))) == 1

    def refuse(*args):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(text_classifier, "compute_classifier", refuse)
    assert torch.equal(text_classifier.zero_shot_classifier(backbone, ["circle"], ["a {c}"], ctx), first)
    with pytest.raises(AssertionError, match="recomputed"):
        text_classifier.zero_shot_classifier(backbone, ["circle"], ["the {c}"], ctx)  # other templates
    other = build_backbone({"spec": "clip:utabench-clip-tiny", "seed": 1})
    with pytest.raises(AssertionError, match="recomputed"):
        text_classifier.zero_shot_classifier(other, ["circle"], ["a {c}"], ctx)  # other text weights
