"""Run configurations (YAML): settings, backbones, tasks with their datasets, and optionally the embedded world.

    results: runs/paper                   # where records go (the CLI's --results wins)
    settings: {device: auto, batch_size: 256, workers: 8, precision: amp_bf16, cache_dir: ~/.cache/utabench}
    world: {seed: 0}                      # generate the embedded world; roots may then say {world}/...
    backbones:
      - {name: uta-b16, spec: "uta:B-16", checkpoint: ${CKPT}/uta_b16.pt, paper: {method: UTA, model: B/16@224, pairs: 2B}}
    tasks:
      zeroshot-classification:
        - {name: imagenet-1k, type: imagenet, root: ${DATA}/imagenet}
      retrieval:
        - {name: flickr30k, type: flickr30k, root: ${DATA}/flickr30k}

`${VAR}` is taken from the environment; an unset variable is an error naming it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from utabench.harness.errors import UtabenchError

DEFAULT_CONFIG = "embedded.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class RunConfig:
    source: str
    results: Optional[str]
    settings: Dict[str, Any]
    backbones: List[Dict[str, Any]]
    tasks: Dict[str, List[Dict[str, Any]]]
    world: Optional[Dict[str, Any]] = None


def map_strings(value: Any, fn) -> Any:
    """Apply `fn` to every string inside nested lists and dicts."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    return value


def _expand(value: Any, source: str) -> Any:
    def var(match):
        name = match.group(1)
        if name not in os.environ:
            raise UtabenchError(f"{source} uses ${{{name}}} but the environment variable {name} is not set")
        return os.environ[name]
    return map_strings(value, lambda text: _VAR.sub(var, text))


def read_yaml_mapping(source: Path, what: str, hint: str) -> Dict[str, Any]:
    """A YAML file that must hold a mapping; `what` names it in errors, `hint` says where good ones are."""
    if not source.is_file():
        raise UtabenchError(f"{what} {source} does not exist; {hint}")
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UtabenchError(f"{what} {source} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise UtabenchError(f"{what} {source} must be a mapping; {hint}")
    return raw


def bundled_config(name: str) -> Path:
    return Path(str(resources.files("utabench.configs").joinpath(name)))


def load_config(path: Optional[str] = None) -> RunConfig:
    source = Path(path) if path else bundled_config(DEFAULT_CONFIG)
    raw = read_yaml_mapping(source, "config", "pass a YAML file with `backbones` and `tasks` (see utabench/configs/)")
    unknown = set(raw) - {"results", "settings", "world", "backbones", "tasks"}
    if unknown:
        raise UtabenchError(f"config {source}: unknown top-level keys {', '.join(sorted(unknown))}; "
                            "allowed: results, settings, world, backbones, tasks")
    cfg = _expand(raw, str(source))
    backbones, tasks = cfg.get("backbones") or [], cfg.get("tasks") or {}
    if not isinstance(backbones, list) or not backbones:
        raise UtabenchError(f"config {source}: `backbones` must be a non-empty list of backbone entries")
    if not isinstance(tasks, dict) or not tasks or not all(isinstance(v, list) for v in tasks.values()):
        raise UtabenchError(f"config {source}: `tasks` must map task names to lists of dataset entries")
    for task, datasets in tasks.items():
        for entry in datasets:
            if not isinstance(entry, dict) or "type" not in entry:
                raise UtabenchError(f"config {source}: every dataset of task {task} needs a `type` (and `root`)")
            entry.setdefault("name", entry["type"])
    return RunConfig(source=str(source), results=cfg.get("results"), settings=dict(cfg.get("settings") or {}),
                     backbones=backbones, tasks=tasks, world=cfg.get("world"))


def substitute_world(cfg: RunConfig, world_root: Path) -> None:
    """Replace `{world}` in the dataset entries (roots, annotation / class files, nested paths) by the generated
    world's directory."""
    for task, datasets in cfg.tasks.items():
        cfg.tasks[task] = map_strings(datasets, lambda text: text.replace("{world}", str(world_root)))
