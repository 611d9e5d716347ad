"""Run configurations (YAML): settings, backbones, tasks with their datasets, and optionally the embedded world.

    results: runs/paper                   # where records go (the CLI's --results wins)
    settings: {device: auto, batch_size: 256, workers: 8, precision: amp_bf16, cache_dir: ~/.cache/utabench}
    world: {seed: 0}                      # generate the embedded world; roots may then say {world}/...
    backbones:
      - {name: uta-b16, spec: "uta:B-16", checkpoint: ${CKPT}/uta_b16.pt, paper: {method: UTA, model: B/16@224, pairs: 2B}}
    tasks:
      zeroshot-classification:
        datasets:
          - {name: imagenet-1k, type: imagenet, root: ${DATA}/imagenet}
      detection:
        options: {iters: 30000}           # the task's options (its schema: `utabench run detection --help`)
        backbones: [uta-b16]              # optional: the backbones this task runs for (default: all)
        datasets:
          - {name: coco, type: coco, root: ${DATA}/coco, options: {recipe: cascade_mask_rcnn_vit_b_coco}}

A task may also be a plain list of dataset entries (the earlier layout); task options written inside a dataset
entry are still read, with a deprecation note. `${VAR}` is taken from the environment; an unset variable is an error
naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import NonNegativeInt, PositiveInt, field_validator

from utabench.backbones.factory import check_entry
from utabench.core.configfile import bundled_config, expand_env, read_yaml_mapping, with_world
from utabench.core.context import DECODERS, DEFAULT_BATCH_SIZE, PRECISIONS
from utabench.core.errors import UtabenchError
from utabench.core.paths import distinct_components
from utabench.core.registry import TASKS
from utabench.core.schema import Schema, unknown_key_message, validate, validated_dict
from utabench.harness.paper import PaperSpec
from utabench.pretrain.config import check_pretrain_entry, is_pretrain_entry
from utabench.world.build import DEFAULT_COUNTS

DEFAULT_CONFIG = "embedded.yaml"


@dataclass
class RunConfig:
    source: str
    results: Optional[str]
    settings: Dict[str, Any]
    backbones: List[Dict[str, Any]]
    tasks: Dict[str, List[Dict[str, Any]]]  # each dataset entry with its task's options merged in
    world: Optional[Dict[str, Any]] = None
    notes: List[str] = field(default_factory=list)  # deprecations to tell the user


class Settings(Schema):
    """Run settings (the config's `settings:`; command-line flags of the same names win): the one place of their
    defaults and checks. `batch_size` and `precision` are evaluation's: a task that trains (detection, segmentation,
    fine-tuning, LLaVA) trains with its recipe's, and its records say so."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: PositiveInt = DEFAULT_BATCH_SIZE
    workers: Union[int, str] = "auto"  # data-loader processes (auto: 0 on CPU, CPUs on CUDA)
    precision: Literal[("auto",) + PRECISIONS] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    threads: Optional[PositiveInt] = None  # torch CPU threads
    cache_dir: Optional[str] = None  # text classifiers, trained models, the embedded world
    skip_corrupt: bool = False
    decode: Literal[DECODERS] = "pil"  # gpu: batched nvjpeg decode and resize on the device (pixels differ a little)
    feature_cache: bool = True  # keep zero-shot / retrieval image features in the cache directory
    # run-all's stages at once, as worker processes (harness/parallel.py); auto: one per thread (at most 4) on a CPU,
    # 1 on CUDA or under torchrun
    parallel: Union[PositiveInt, Literal["auto"]] = 1

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value):
        text = str(value).strip()
        if text == "auto":
            return text
        if not text.isdigit():
            raise ValueError(f"Input should be auto or a number of processes >= 0 (got {value!r})")
        return int(text)


class WorldConfig(Schema):
    """The embedded world: its seed and, optionally, how many images of each kind (see world/build.py)."""

    seed: NonNegativeInt = 0
    counts: Optional[Dict[str, NonNegativeInt]] = None

    @field_validator("counts")
    @classmethod
    def _known_counts(cls, counts):

        for key in counts or {}:
            if key not in DEFAULT_COUNTS:
                raise ValueError(unknown_key_message(key, DEFAULT_COUNTS))
        return counts


class TaskSection(Schema):
    """`tasks: {detection: {options: {...}, datasets: [...]}}`: the task's options (checked against the task's
    schema), its datasets (each may give its own `options:`), and optionally the backbones it runs for."""

    options: Dict[str, Any] = {}
    datasets: List[Dict[str, Any]]
    backbones: Optional[List[str]] = None


class RunConfigFile(Schema):
    results: Optional[str] = None
    settings: Optional[Settings] = None
    world: Optional[WorldConfig] = None
    backbones: List[Union[str, Dict[str, Any]]]
    tasks: Dict[str, Union[TaskSection, List[Dict[str, Any]]]]  # a list: the earlier layout, datasets only


def check_backbone_entry(entry: Any, where: str) -> Any:
    """Refuse a backbone entry (one to build, or one utabench pretrains) with an unknown key or a bad value; returns
    it with its options and its `paper:` row validated."""
    entry = check_pretrain_entry(entry, where) if is_pretrain_entry(entry) else check_entry(entry, where)
    if isinstance(entry, dict) and entry.get("paper") is not None:
        entry["paper"] = validated_dict(PaperSpec, entry["paper"], f"{where}: paper")
    return entry


def _backbone_key(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    return entry.get("name") or entry.get("spec") or f"{entry.get('family')}:{entry.get('model')}"


def load_config(path: Optional[str] = None, data: Optional[str] = None) -> RunConfig:
    """Read and check a run config: every key of every level is known, every value has its type and range, every
    dataset entry fits its task and type. Nothing is generated, trained or written before this passes. `data`: what
    `${DATA}` names (`run-all --data DIR`; default the environment's DATA)."""

    source = Path(path) if path else bundled_config(DEFAULT_CONFIG)
    raw = read_yaml_mapping(source, "config", "pass a YAML file with `backbones` and `tasks` (see utabench/configs/)")
    if data and "${DATA}" not in source.read_text():
        raise UtabenchError(f"--data {data}: config {source} has no ${{DATA}} for it to name; drop --data or use a "
                            "config whose dataset roots say ${DATA}/... (e.g. utabench/configs/datacomp.yaml)")
    cfg = validate(RunConfigFile, expand_env(raw, str(source), {"DATA": data} if data else None), f"config {source}")
    if not cfg.backbones:
        raise UtabenchError(f"config {source}: `backbones` must be a non-empty list of backbone entries")
    if not cfg.tasks:
        raise UtabenchError(f"config {source}: `tasks` must map task names to lists of dataset entries")
    backbones = [check_backbone_entry(entry, f"config {source}: backbones[{i}] ({_backbone_key(entry)})")
                 for i, entry in enumerate(cfg.backbones)]
    names = [_backbone_key(entry) for entry in backbones]
    distinct_components(names, f"config {source}: backbone name")
    notes: List[str] = []
    tasks = {task: _task_entries(task, section, f"config {source}: tasks.{task}", names, notes)
             for task, section in cfg.tasks.items()}
    for task, entries in tasks.items():
        distinct_components(dict.fromkeys(entry["name"] for entry in entries), f"config {source}: tasks.{task}: "
                            "dataset name")
    settings = cfg.settings.model_dump(exclude_unset=True) if cfg.settings else {}
    world = cfg.world.model_dump(exclude_unset=True) if cfg.world else None
    return RunConfig(source=str(source), results=cfg.results, settings=settings, backbones=backbones, tasks=tasks,
                     world=world, notes=notes)


def _task_entries(task: str, section: Union[TaskSection, List[Dict[str, Any]]], where: str, names: List[str],
                  notes: List[str]) -> List[Dict[str, Any]]:
    """A task's dataset entries, each checked, with the task's options merged in (the entry's own `options:` win;
    options written inline in an entry, the earlier layout, are read with a deprecation note)."""

    runner = TASKS.get(task)()
    if isinstance(section, list):
        section = TaskSection(datasets=section)
    validated_dict(runner.options, section.options, f"{where}.options")  # an unknown task option fails here
    entries = []
    for i, dataset in enumerate(section.datasets):
        here = f"{where}.datasets[{i}]" if section.options or section.backbones else f"{where}[{i}]"
        dataset = dict(dataset)
        own = dataset.pop("options", None) or {}
        inline = [key for key in dataset if key in runner.options.keys()]
        if inline:
            notes.append(f"{here}: task options inside a dataset entry ({', '.join(inline)}) are deprecated; put "
                         f"them under tasks.{task}.options or the entry's `options:`")
        if section.backbones is not None:
            dataset.setdefault("backbones", section.backbones)
        entry = runner.entry({**section.options, **own, **dataset}, here)
        unknown = [b for b in entry.get("backbones", []) if b not in names]
        if unknown:
            raise UtabenchError(f"{here}: `backbones` names {unknown[0]!r}, which is not a backbone of this config "
                                f"(backbones: {', '.join(names)})")
        entries.append(entry)
    return entries


def drop_missing(cfg: RunConfig) -> List[str]:
    """Leave out the `optional` datasets whose root does not exist (a suite over sets a lab may not all have); one
    line for each."""
    lines = []
    for task, entries in cfg.tasks.items():
        kept = [e for e in entries if not (e.get("optional") and e.get("root") and "://" not in str(e["root"])
                                           and not Path(e["root"]).exists())]
        lines += [f"tasks.{task}: dataset {e['name']}: {e['root']} not found; skipped (optional)"
                  for e in entries if e not in kept]
        cfg.tasks[task] = kept
    cfg.tasks = {task: entries for task, entries in cfg.tasks.items() if entries}
    return lines


def substitute_world(cfg: RunConfig, world_root: Path) -> None:
    """Replace `{world}` in the dataset entries (roots, annotation / class files, nested paths) by the generated
    world's directory."""
    cfg.tasks = with_world(cfg.tasks, world_root)
