"""What a task runner is: it names the dataset types it reads and the options it takes, checks and loads a dataset
entry, and turns (backbone, dataset, run context) into metrics plus counts for the result record.

A dataset entry is `{name, type, root, backbones}` plus the keys of its dataset type's schema (e.g. `classes`,
`annotations`) plus the keys of the task's options schema (e.g. `recipe`, `iters`); any other key is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

from utabench.core.context import Setup
from utabench.core.errors import UtabenchError
from utabench.core.paths import path_component
from utabench.core.registry import DATASETS
from utabench.core.schema import Schema, check_keys, validated_dict
from utabench.core.tablespec import AblationColumn


class DatasetBase(Schema):
    name: Optional[str] = None  # the dataset's name in the results (default: its type)
    type: str
    root: Optional[str] = None
    backbones: Optional[List[str]] = None  # run this dataset for these backbones only (default: all)
    optional: bool = False  # a run-all leaves it out, saying so, when its root does not exist


@dataclass
class TaskOutput:
    metrics: Dict[str, float]
    num_images: int
    skipped_images: int = 0
    model_seconds: float = 0.0  # wall time of evaluation forward passes (rank 0): what images/s divides by
    train_seconds: float = 0.0  # wall time of the task's own training (fine-tuning, LLaVA stages), if any
    details: Dict[str, Any] = field(default_factory=dict)
    # how the numbers were made: "evaluation" (None: the run's own settings, RunContext.setup()) and each training
    # stage the task ran, by name ("finetune", "detector", "stage1", ...), with the batch and precision it trained with
    evaluation: Optional[Setup] = None
    training: Dict[str, Setup] = field(default_factory=dict)
    discard: List[Path] = field(default_factory=list)  # training leftovers to delete once the record is written
    # per-sample outcomes the metrics are counted from (utabench/tasks/bootstrap.py: classification's top-5 and
    # targets, retrieval's ranks, and the sample ids); the runner writes them beside the record and bootstraps the
    # metrics' intervals from them. Empty: the task keeps none.
    samples: Dict[str, Any] = field(default_factory=dict)


class Task:
    """A task and the facts about it that the harness reads: the dataset types it reads (a plugin adds one with
    `reads`), the options it takes, what a job of it costs and the ablation-table columns it feeds."""

    name: str = ""
    dataset_types: Tuple[str, ...] = ()
    dataset_aliases: Dict[str, str] = {}
    options: Type[Schema] = Schema  # the task's own keys of a dataset entry
    # "evaluation": no training, seconds to minutes a dataset (a launcher's array of 1-GPU jobs; one --parallel stage
    # per backbone); "training": it trains (a multi-GPU job; one stage per dataset)
    cost: Literal["evaluation", "training"] = "training"
    ablation_columns: Tuple[AblationColumn, ...] = ()  # its columns in Tables 6-8
    reads_kind: Optional[str] = None  # "classification" or "retrieval": the kind of set it needs, where a type has both

    @classmethod
    def reads(cls, dataset_type: str) -> None:
        """Let this task read another (registered) dataset type: how a plugin adds a dataset type to a task."""
        DATASETS.get(dataset_type)
        if dataset_type not in cls.dataset_types:
            cls.dataset_types = cls.dataset_types + (dataset_type,)

    def entry(self, cfg: Dict[str, Any], where: str = "") -> Dict[str, Any]:
        """The dataset entry checked against its type's and this task's schemas, values converted (e.g. `iters`
        given as text becomes a number), with `name` defaulting to the type."""
        where = where or f"task {self.name}, dataset {cfg.get('name') or cfg.get('type')}"
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise UtabenchError(f"{where}: a dataset entry needs a `type` (and a `root`), got {cfg!r}")
        cfg = dict(cfg)
        resolved = self.dataset_aliases.get(cfg["type"], cfg["type"])
        if resolved not in self.dataset_types:
            raise UtabenchError(f"task {self.name} reads dataset types {', '.join(self.dataset_types)}; got "
                                f"{cfg['type']!r} (dataset {cfg.get('name', '?')})")
        typed = DATASETS.schema(resolved) or Schema
        parts = (DatasetBase, typed, self.options)
        check_keys(cfg, [key for part in parts for key in part.keys()], where)
        out: Dict[str, Any] = {}
        for part in parts:
            out.update(validated_dict(part, {k: v for k, v in cfg.items() if k in part.keys()}, where))
        out.setdefault("name", out["type"])
        path_component(out["name"], f"{where}: dataset name")  # it names the record's file
        return out

    def options_of(self, entry: Dict[str, Any]) -> Dict[str, Any]:
        """This task's options from a (checked) dataset entry, defaults filled in: what `run` gets."""
        given = {key: value for key, value in (entry or {}).items() if key in self.options.keys()}
        return validated_dict(self.options, given, f"task {self.name}", defaults=True)

    def load(self, dataset_cfg: Dict[str, Any]):
        """The dataset an entry names (its `type` as given stays in the records: `coco` for detection reads
        the `coco-instances` layout)."""
        cfg = self.entry(dataset_cfg)
        cfg["type"] = self.dataset_aliases.get(cfg["type"], cfg["type"])
        data = DATASETS.get(cfg["type"])(cfg)
        kind = getattr(data, "kind", None)
        if self.reads_kind and kind and kind != self.reads_kind:
            raise UtabenchError(f"dataset {cfg['name']} ({cfg['type']} at {cfg.get('root')}) is a {kind} set; task "
                                f"{self.name} reads {self.reads_kind} sets")
        return data

    def run(self, backbone, data, ctx, options: Optional[Dict[str, Any]] = None) -> TaskOutput:
        """Metrics of `backbone` on `data`; `options` are this task's (`options_of`; None: the defaults)."""
        raise NotImplementedError
