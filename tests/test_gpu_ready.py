"""GPU-ready defaults and data path, checked on CPU: `auto` precision and workers leave CPU runs as they were, the
text classifier's batching gives the per-class columns, `--decode gpu` is refused without CUDA in one line, and its
decode + tensor transform (run here on the CPU) stays close to the PIL path, in pixels and in zero-shot top-1."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from utabench.backbones import build_backbone
from utabench.core.context import MAX_AUTO_WORKERS, resolve_precision, resolve_workers
from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.datasets.gpu_decode import EncodedImageList, TensorTransform, collate_encoded, decode_batch
from utabench.datasets.images import CorruptImage, ImageList
from utabench.harness.cli import main
from utabench.harness.config import Settings
from utabench.tasks import text_classifier

SPECS = ["clip:utabench-clip-tiny", "uta:tiny", "eva02:utabench-eva02-clip-tiny"]


def test_auto_resolves_to_fp32_and_no_workers_on_cpu(monkeypatch):
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "amp_bf16"
    assert resolve_precision("amp_fp16", "cuda") == "amp_fp16"
    assert resolve_workers("auto", "cpu") == 0 and resolve_workers(3, "cpu") == 3
    monkeypatch.setattr("utabench.core.context.available_cpus", lambda: 64)
    assert resolve_workers("auto", "cuda", 8) == 7 and resolve_workers("auto", "cuda", 1) == MAX_AUTO_WORKERS
    monkeypatch.setattr("utabench.core.context.available_cpus", lambda: 4)
    assert resolve_workers("auto", "cuda", 8) == 1


def _zeroshot(world, tmp_path, name, *flags):
    results = tmp_path / name
    assert main(["run", "zeroshot-classification", "--backbone", "uta:tiny", "--dataset",
                 f"imagenet:{world / 'imagenet'}", "--classes", str(world / "classes.json"), "--results",
                 str(results), "--cache-dir", str(tmp_path / f"cache-{name}"), "--no-progress", *flags]) == 0
    return json.loads(next(results.glob("*/*/imagenet.json")).read_text())


def test_cpu_defaults_give_the_records_of_explicit_fp32_and_no_workers(world, tmp_path):
    auto = _zeroshot(world, tmp_path, "auto", "--device", "cpu")
    explicit = _zeroshot(world, tmp_path, "explicit", "--device", "cpu", "--precision", "fp32", "--workers", "0")
    run = auto["provenance"]["evaluation"]
    assert run["precision"] == "fp32" and run["workers"] == 0 and run["decode"] == "pil"
    assert auto["metrics"] == explicit["metrics"]


def test_decode_gpu_without_cuda_is_one_line(world, tmp_path, capsys):
    assert main(["run", "zeroshot-classification", "--backbone", "uta:tiny", "--dataset",
                 f"imagenet:{world / 'imagenet'}", "--results", str(tmp_path / "r"), "--device", "cpu",
                 "--decode", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decode gpu decodes JPEGs with nvjpeg on a CUDA device" in err[0]
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.json"))
    with pytest.raises(ValidationError, match="'pil' or 'gpu'"):
        Settings(decode="nvjpeg")


def test_batched_text_classifier_equals_one_class_per_forward(ctx):
    backbone = build_backbone("clip:utabench-clip-tiny")
    names, templates = ["circle", "star", "square", "cross", "heart"], ["a photo of a {c}.", "art of the {c}", "{c}"]
    one = text_classifier.compute_classifier(backbone, names, templates, ctx)
    batched = text_classifier.compute_classifier(backbone, names, templates, ctx, classes_per_batch=3)
    with torch.no_grad():  # the definition, written out: normalised template embeddings, averaged, normalised
        emb = F.normalize(backbone.encode_text(backbone.tokenize([t.format(c=n) for n in names for t in templates])),
                          dim=-1).view(5, 3, -1).mean(1)
    assert torch.allclose(one, F.normalize(emb, dim=-1).T, atol=1e-6)
    assert torch.allclose(batched, one, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_eval_transforms_read_as_tensor_transforms(spec):
    backbone = build_backbone(spec)
    transform = TensorTransform.of(backbone.image_transform())
    mean, std = backbone.normalisation()
    assert transform.mean == mean and transform.std == std and transform.crop == (backbone.info.input_size,) * 2


def test_an_unknown_transform_step_is_refused():
    import torchvision.transforms as T

    with pytest.raises(UtabenchError, match="has ColorJitter"):
        TensorTransform.of(T.Compose([T.Resize(32), T.CenterCrop(32), T.ColorJitter(0.1), T.ToTensor(),
                                      T.Normalize([0.5] * 3, [0.5] * 3)]))


def _decoded(images: ImageList, transform: TensorTransform, batch: int = 8):
    encoded = EncodedImageList(images)
    out, kept = [], []
    for start in range(0, len(encoded), batch):
        items = collate_encoded([encoded[i] for i in range(start, min(start + batch, len(encoded)))])
        pixels, keep = decode_batch(items[0], items[2], images, transform, "cpu")
        out.append(pixels)
        kept.append(items[2][keep])
    return torch.cat(out), torch.cat(kept)


@pytest.mark.parametrize("spec", SPECS)
def test_tensor_decode_is_close_to_pil_in_pixels_and_top1(world, spec, ctx):
    """The world's JPEGs through decode_batch (torchvision's decode_jpeg where its image extension loads, else the
    PIL fallback, as on this CPU build) and the tensor transform (torch's antialiased bicubic) against PIL +
    torchvision: pixel difference and zero-shot top-1 on the same images (bench/ prints nvjpeg's on a GPU)."""
    backbone = build_backbone(spec)
    data = DATASETS.get("imagenet")({"root": str(world / "imagenet"), "classes": str(world / "classes.json"),
                                     "name": "imagenet-1k"})
    images = ImageList(data.samples, backbone.image_transform())
    pil = torch.stack([images[i][0] for i in range(len(images))])
    tensor, kept = _decoded(images, TensorTransform.of(backbone.image_transform()))
    assert torch.equal(kept, torch.arange(len(images)))
    std = torch.tensor(backbone.normalisation()[1]).view(1, 3, 1, 1)
    diff = ((tensor - pil) * std * 255).abs()  # in 8-bit pixel levels
    assert diff.mean() < 3.0 and diff.max() <= 128, (diff.mean(), diff.max())
    classifier = text_classifier.zero_shot_classifier(backbone, data.classnames, data.templates, ctx)
    with torch.no_grad():
        top1 = [(F.normalize(backbone.encode_image(x), dim=-1) @ classifier).argmax(1) for x in (pil, tensor)]
    agree = (top1[0] == top1[1]).float().mean().item()
    assert agree >= 0.75, agree


def test_corrupt_files_are_named_or_skipped_in_the_tensor_decode(world, tmp_path):
    good = sorted((world / "imagenet" / "val").rglob("*.JPEG"))[:3]
    bad = tmp_path / "bad.JPEG"
    bad.write_bytes(good[0].read_bytes()[:200])  # a JPEG cut short
    samples = [(good[0], 0), (bad, 1), (good[1], 2)]
    transform = TensorTransform.of(build_backbone("uta:tiny").image_transform())
    with pytest.raises(CorruptImage, match="bad.JPEG"):
        _decoded(ImageList(samples), transform)
    pixels, kept = _decoded(ImageList(samples, skip_corrupt=True), transform)
    assert kept.tolist() == [0, 2] and pixels.shape[0] == 2
