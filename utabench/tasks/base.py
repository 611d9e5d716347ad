"""What a task runner is: it names the dataset types it reads, loads (and so validates) a dataset from its config,
and turns (backbone, dataset, run context) into metrics plus counts for the result record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

from utabench.harness.errors import UtabenchError
from utabench.harness.registry import DATASETS


@dataclass
class TaskOutput:
    metrics: Dict[str, float]
    num_images: int
    skipped_images: int = 0
    model_seconds: float = 0.0  # wall time of the image forward passes (rank 0)
    details: Dict[str, Any] = field(default_factory=dict)


class Task:
    name: str = ""
    dataset_types: Tuple[str, ...] = ()

    def load(self, dataset_cfg: Dict[str, Any]):
        type_ = dataset_cfg.get("type")
        if type_ not in self.dataset_types:
            raise UtabenchError(
                f"task {self.name} reads dataset types {', '.join(self.dataset_types)}; got {type_!r} "
                f"(dataset {dataset_cfg.get('name', '?')})"
            )
        return DATASETS.get(type_)(dataset_cfg)

    def run(self, backbone, data, ctx) -> TaskOutput:
        raise NotImplementedError
