"""ImageNet fine-tuning (Table 4's FT column): any registered image backbone fine-tuned on an ImageNet-layout train
split with the FT-CLIP recipe (`utabench/configs/finetune/`), then evaluated on the dataset entry's images with the
EMA and with the raw weights (top-1 / top-5; the recipe's `shown` says which the record's top1 is).

The fine-tuned model is kept in the cache directory under the fingerprint of its configuration (recipe, backbone
weights, training split), so it trains once for every evaluation set (ImageNet val, -V2, -Sketch) and a killed run
resumes from its last checkpoint. Training uses the shared trainer: exact resume, DDP under torchrun, bf16 on GPU,
gradient accumulation (`optim.grad_accum`) for the paper's global batch on fewer GPUs. The record's training setup
(stage `finetune`) is the one the fine-tuned model's run recorded (the recipe's batch and precision, not --batch-size /
--precision, which only the evaluation reads).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from pydantic import Field
from safetensors.torch import load_file

from utabench.backbones.factory import backbone_entry
from utabench.core.context import Setup
from utabench.core.errors import UtabenchError
from utabench.core.registry import TASKS
from utabench.core.schema import Schema
from utabench.core.tablespec import AblationColumn
from utabench.datasets.images import ImageList, dataset_root, list_images
from utabench.finetune.config import load_finetune_recipe
from utabench.finetune.model import Classifier
from utabench.finetune.recipe import FinetuneRecipe, eval_transform
from utabench.tasks.base import Task, TaskOutput
from utabench.tasks.bootstrap import Samples, hits_samples
from utabench.tasks.features import extract
from utabench.tasks.metrics import percent_hits, topk_hits
from utabench.training.fingerprint import run_fingerprint
from utabench.training.setup import read_setup
from utabench.training.trainer import Trainer, finished_run


class FinetuneOptions(Schema):
    recipe: Optional[str] = Field(None, description="ftclip-b16, ftclip-l14, world or a YAML path (default: "
                                  "FT-CLIP's B or L recipe by backbone depth)")
    train: Optional[str] = Field(None, description="the training split, ROOT/<wnid>/*.JPEG (default: the "
                                 "ImageNet root's train/ beside its val/)")
    eval_only: Optional[str] = Field(None, description="a finetuned.safetensors to evaluate instead of training")


def train_samples(data, train: Optional[str]) -> Tuple[Path, List[Tuple[Path, int]]]:
    """The training split's (image, label) pairs, labelled in the evaluation set's label space (by wnid, or by
    folder name for an ImageFolder)."""
    if train is None:
        if data.root.name != "val":
            raise UtabenchError(f"dataset {data.name}: give the fine-tuning's training split with `train: DIR` "
                                "(the ImageNet train folders, ROOT/<wnid>/*.JPEG)")
        train = data.root.parent / "train"
    root = dataset_root(train, "ROOT/<wnid>/*.JPEG, the classes of the evaluation set", "training split")
    index = {class_id: label for label, class_id in enumerate(data.class_ids)}
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    unknown = [f for f in folders if f not in index]
    if unknown or not folders:
        raise UtabenchError(f"training split {root}: folders {', '.join(unknown[:5]) or '(none)'} are not classes of "
                            f"{data.name}; expected one folder per class, named as the evaluation set's classes")
    samples = [(path, index[folder]) for folder in folders for path in list_images(root / folder)]
    if not samples:
        raise UtabenchError(f"training split {root} has no images")
    return root, samples


@TASKS.register("finetune-classification", help="ImageNet fine-tuning with the FT-CLIP recipe (Table 4 FT): "
                "top-1 / top-5 with EMA and raw weights")
class FinetuneClassification(Task):
    name = "finetune-classification"
    dataset_types = ("imagenet", "imagenet-v2", "imagenet-sketch", "imagefolder")
    options = FinetuneOptions
    ablation_columns = (AblationColumn("FT", "imagenet", "top1", 1),)

    def run(self, backbone, data, ctx, options=None) -> TaskOutput:

        options = options or self.options_of({})
        recipe = load_finetune_recipe(options["recipe"] or ("ftclip-b16" if backbone.info.depth <= 12
                                                            else "ftclip-l14"))
        start = time.perf_counter()
        training = {}
        if options["eval_only"]:
            weights, trained = Path(options["eval_only"]), {}
        else:
            weights, trained, setup = self._train(recipe, backbone, data, options, ctx)
            training = {"finetune": setup} if setup else {}  # none for a model cached before setups were recorded
        train_seconds = time.perf_counter() - start
        metrics, seconds, samples = self._evaluate(weights, recipe, backbone, data, ctx)
        details = {"recipe": options["recipe"], "shown": recipe["shown"], "finetuned": str(weights), **trained}
        return TaskOutput(metrics=metrics, num_images=len(data.samples), model_seconds=seconds,
                          train_seconds=train_seconds, details=details, training=training, samples=samples)

    def _train(self, recipe, backbone, data, options, ctx) -> Tuple[Path, Dict[str, Any], Optional[Setup]]:
        """The fine-tuned weights (trained now or found in the cache), details of the training and the setup it
        recorded."""

        root, samples = train_samples(data, options["train"])
        listing = hashlib.sha256("\n".join(f"{p.relative_to(root)}:{y}" for p, y in samples).encode()).hexdigest()
        cfg = {**recipe, "backbone": backbone_entry(backbone), "backbone_sha256": backbone.info.weights_sha256,
               "num_classes": len(data.class_ids), "train": {"root": str(root), "images": len(samples),
                                                            "listing": listing}}
        out = ctx.cache_dir / "finetune" / run_fingerprint(cfg)
        meta = finished_run(out, cfg)
        if meta is None:
            log = print if ctx.dist.is_main else (lambda _: None)
            log(f"[{backbone.spec.key}] fine-tuning on {len(samples)} images of {root} into {out}")
            done = Trainer(cfg, FinetuneRecipe(cfg, backbone, samples, len(data.class_ids)), out, device=ctx.device,
                           dist=ctx.dist, progress=ctx.progress, log=log).run()
            meta = json.loads(done.read_text())
        return Path(meta["finetuned"]), {"train_images": len(samples), "train_root": str(root), "steps": meta["steps"],
                                          "work_dir": str(out)}, read_setup(meta)

    def _evaluate(self, weights: Path, recipe, backbone, data, ctx) -> Tuple[Dict[str, float], float, Samples]:
        """Top-1 / top-5 of the EMA and the raw weights, the seconds it took and each image's hits (for the
        intervals)."""

        if not weights.is_file():
            raise UtabenchError(f"fine-tuned weights {weights} do not exist; pass a finetuned.safetensors")
        state = load_file(str(weights))
        model = Classifier(backbone, len(data.class_ids), 0.0, recipe["head_init_scale"]).to(ctx.device).eval()
        mean, std = backbone.normalisation()
        images = ImageList(data.samples, eval_transform(recipe, backbone.info.input_size, mean, std), ctx.skip_corrupt)
        seconds, hits, ids = 0.0, {}, None
        for kind in ("ema", "raw"):
            weights_of = {k[len(kind) + 1:]: v for k, v in state.items() if k.startswith(f"{kind}.")}
            if not weights_of:
                continue
            try:
                model.load_state_dict(weights_of)
            except RuntimeError as exc:
                raise UtabenchError(f"{weights} does not fit {backbone.spec.key} with {len(data.class_ids)} classes: "
                                    f"{str(exc).splitlines()[0]}") from None
            feats = extract(model, images, ctx, desc=f"{data.name} ({kind})")
            suffix = "" if kind == recipe["shown"] else f"_{kind}"
            for k, hit in topk_hits(feats.features, feats.targets, (1, 5)).items():
                hits[f"top{k}{suffix}"] = hit.numpy()
            seconds += feats.seconds
            ids = feats.indices.numpy()
        metrics = percent_hits(hits)
        if "top1" not in metrics:
            raise UtabenchError(f"{weights} holds no {recipe['shown']} weights, which the recipe's `shown` asks for")
        return metrics, seconds, hits_samples(hits, ids)
