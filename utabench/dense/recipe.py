"""From a recipe (an mmdet / mmseg config under `utabench/configs/dense/`, or the user's) to the config of one run.

utabench fills in the backbone, the dataset root and annotation files, the class list (checked against the
annotations: a mismatch stops the run), the heads' class counts, the LVIS class frequencies of the federated loss,
the image normalisation of the backbone, and rescales the schedule to the user's GPUs: the recipe's iterations,
warm-up and steps are for `paper_batch_size` images per step; with B = per-GPU batch x GPUs, iterations are
multiplied by paper_batch_size / B and the learning rate by B / paper_batch_size (mmengine's auto_scale_lr). The
filled config also says how it trains and tests (`training_setup`, `evaluation_setup`): the record reports these,
not the run's --batch-size / --precision, which dense transfer does not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from utabench.core.context import Setup
from utabench.core.errors import UtabenchError
from utabench.datasets.dense import standard_classes

RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs" / "dense"
SCHEDULE_KEYS = ("begin", "end")


def recipe_path(name: str) -> Path:
    path = Path(name) if name.endswith(".py") else RECIPE_DIR / f"{name}.py"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.py")))
        raise UtabenchError(f"unknown dense recipe {name!r}; known: {known} (or a path to an mmengine .py config)")
    return path


def default_recipe(kind: str, depth: int) -> str:
    """The paper's recipe for a dataset kind (coco, lvis, ade20k) and a backbone depth (<= 12: B, else L)."""
    size = "b" if depth <= 12 else "l"
    return f"upernet_vit_{size}_ade20k" if kind == "ade20k" else f"cascade_mask_rcnn_vit_{size}_{kind}"


def load_recipe(name: str):
    from mmengine.config import Config

    return Config.fromfile(str(recipe_path(name)))


def recipe_classes(cfg, kind: str) -> List[str]:
    """The recipe's `classes` (a list, or absent: the standard list of the dataset kind)."""
    return list(cfg.get("classes") or standard_classes(kind))


def check_classes(data_classes: List[str], expected: List[str], source: str, recipe: str) -> None:
    if list(data_classes) != list(expected):
        def show(names):
            return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")

        raise UtabenchError(
            f"{source} has {len(data_classes)} categories ({show(data_classes)}) but recipe {recipe} expects "
            f"{len(expected)} ({show(expected)}); use a recipe whose `classes` match the annotations"
        )


def _inner_dataset(loader):
    """The innermost dataset config of a dataloader (through wrappers such as ClassBalancedDataset)."""
    dataset = loader["dataset"]
    while "dataset" in dataset:
        dataset = dataset["dataset"]
    return dataset


def _set_num_classes(node, n: int) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "num_classes":
                node[key] = n
            else:
                _set_num_classes(value, n)
    elif isinstance(node, list):
        for value in node:
            _set_num_classes(value, n)


def _fill_federated(node, counts: Optional[List[int]]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "FederatedSigmoidLoss":
            if counts is None:
                raise UtabenchError("the federated loss needs the training annotations' per-category image counts "
                                    "(LVIS `image_count`)")
            node["class_image_counts"] = list(counts)
        for value in node.values():
            _fill_federated(value, counts)
    elif isinstance(node, list):
        for value in node:
            _fill_federated(value, counts)


def _scaled(value: float, factor: float) -> int:
    return max(1, int(round(value * factor)))


def _rescale_iterations(cfg, factor: float) -> int:
    """Multiply the iteration count and every scheduler's begin / end / milestones by `factor` (at least 1, ends
    within the run); returns the new iteration count."""
    iters = _scaled(cfg.train_cfg.max_iters, factor)
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    for sched in cfg.param_scheduler:
        for key in SCHEDULE_KEYS:
            if key in sched and sched[key]:
                sched[key] = min(_scaled(sched[key], factor), iters)
        if "milestones" in sched:
            sched["milestones"] = [_scaled(m, factor) for m in sched["milestones"]]
    return iters


def scale_schedule(cfg, gpus: int) -> Dict[str, float]:
    """Rescale iterations (and everything counted in them) and the lr to `gpus` x the per-GPU batch."""
    per_gpu = int(cfg.train_dataloader.batch_size)
    paper = int(cfg.get("paper_batch_size", per_gpu * gpus))
    factor = paper / (per_gpu * gpus)

    iters = _rescale_iterations(cfg, factor)
    checkpoint = cfg.default_hooks.get("checkpoint")
    if checkpoint is not None:
        checkpoint["interval"] = min(_scaled(checkpoint["interval"], factor), iters)
    cfg.auto_scale_lr = dict(enable=True, base_batch_size=paper)
    return {"per_gpu_batch": per_gpu, "gpus": gpus, "batch": per_gpu * gpus, "paper_batch": paper,
            "iters": iters, "lr_scale": 1 / factor}


def set_iterations(cfg, iters: int) -> None:
    """Shorten (or lengthen) a run to `iters` iterations, keeping the schedule's proportions."""
    iters = _rescale_iterations(cfg, iters / cfg.train_cfg.max_iters)
    if cfg.default_hooks.get("checkpoint") is not None:
        cfg.default_hooks.checkpoint.interval = min(cfg.default_hooks.checkpoint.interval, iters)


def without_amp(cfg) -> bool:
    """fp32 instead of a recipe's mixed precision (for CPU runs: mmengine's AmpOptimWrapper needs a GPU); True if
    the recipe had mixed precision."""
    wrapper = cfg.optim_wrapper
    if wrapper.get("type") != "AmpOptimWrapper":
        return False
    for key in ("dtype", "loss_scale"):
        wrapper.pop(key, None)
    wrapper["type"] = "OptimWrapper"
    return True


def _autocast_precision(enabled: bool, dtype, device_type: str) -> str:
    """The precision of mmengine's autocast (its default dtype: float16 on CUDA, bfloat16 on CPU)."""
    if not enabled:
        return "fp32"
    name = str(dtype).replace("torch.", "") if dtype is not None else None
    if name is None:
        name = "bfloat16" if device_type == "cpu" else "float16"
    return {"bfloat16": "amp_bf16", "float16": "amp_fp16"}.get(name, "fp32")


def training_setup(cfg, device_type: str, world_size: int) -> Setup:
    """How a filled recipe trains: the global batch (the train loader's per-process batch x processes x the optimiser
    wrapper's accumulation), mixed precision as its optimiser wrapper says (AmpOptimWrapper and its dtype)."""
    wrapper = cfg.optim_wrapper
    accumulate = int(wrapper.get("accumulative_counts", 1))
    precision = _autocast_precision(wrapper.get("type") == "AmpOptimWrapper", wrapper.get("dtype"), device_type)
    return Setup(int(cfg.train_dataloader.batch_size) * world_size * accumulate, precision, device_type, world_size,
                 accumulate)


def evaluation_setup(cfg, device_type: str, world_size: int) -> Setup:
    """How a filled recipe tests: the test loader's per-process batch on every process, autocast if the test loop's
    `fp16` says so."""
    test = cfg.get("test_cfg") or {}
    precision = _autocast_precision(bool(test.get("fp16", False)), None, device_type)
    return Setup(int(cfg.test_dataloader.batch_size) * world_size, precision, device_type, world_size)


def use_cpu_processes(cfg) -> None:
    """Several CPU processes under torchrun (no GPUs): mmengine's DDP wrapper without device ids, on gloo."""
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                 find_unused_parameters=False)
    cfg.env_cfg.dist_cfg = dict(backend="gloo")


def areas_file(work_dir: Path) -> Path:
    """Where a segmentation test keeps each image's areas (dense/iou_areas.py)."""
    return Path(work_dir) / "test_areas.npz"


def fill_recipe(cfg, recipe: str, kind: str, backbone_entry: Dict[str, Any], data, options: Dict[str, Any], mean_std,
                work_dir: Path, gpus: int, workers: int) -> Dict[str, float]:
    """Complete `cfg` in place for one run; returns the schedule actually used."""
    classes = recipe_classes(cfg, kind)
    check_classes(data.classes, classes, str(data.val_ann or data.root), recipe)
    cfg.model.backbone.backbone = backbone_entry
    if cfg.get("pixel_norm", "backbone") == "backbone":  # else the recipe's own mean / std (EVA-02 detection)
        mean, std = mean_std
        cfg.model.data_preprocessor.mean = [255.0 * m for m in mean]
        cfg.model.data_preprocessor.std = [255.0 * s for s in std]
    _set_num_classes(cfg.model, len(classes))
    counts = data.class_image_counts
    if counts is None and options.get("eval_only"):
        counts = [1] * len(classes)  # the frequencies only steer training's class sampling
    _fill_federated(cfg.model, counts)
    for loader_name in ("train_dataloader", "test_dataloader"):
        loader = cfg.get(loader_name)
        loader.num_workers = workers
        loader.persistent_workers = False
        dataset = _inner_dataset(loader)
        dataset["data_root"] = str(data.root)
        dataset["metainfo"] = dict(classes=tuple(classes))
    if data.val_ann is not None:
        cfg.test_evaluator.ann_file = str(data.val_ann)
    if isinstance(cfg.test_evaluator, dict) and cfg.test_evaluator.get("type") == "IoUMetric":
        # the same metric, keeping each image's areas for the record's intervals
        cfg.test_evaluator.type, cfg.test_evaluator.areas_file = "KeptAreasIoUMetric", str(areas_file(work_dir))
    if options.get("iters"):
        set_iterations(cfg, int(options["iters"]))
    schedule = scale_schedule(cfg, gpus)
    cfg.work_dir = str(work_dir)
    cfg.launcher = "pytorch" if gpus > 1 else "none"
    cfg.randomness = dict(seed=int(options.get("seed", 0)), deterministic=False)
    cfg.val_dataloader, cfg.val_evaluator, cfg.val_cfg = None, None, None
    return schedule
