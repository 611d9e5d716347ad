"""Class vocabularies and prompt templates: ImageNet wnids (timm's lists), OpenAI class names and the 80 OpenAI
templates (clip_benchmark's files), and user-given class-name / template files."""

from __future__ import annotations

import json
import string
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from utabench.core.errors import UtabenchError


@lru_cache(maxsize=None)
def _timm_list(name: str) -> Tuple[str, ...]:
    text = resources.files("timm.data._info").joinpath(name).read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=None)
def _clip_benchmark_json(name: str) -> Dict:
    return json.loads(resources.files("clip_benchmark.datasets").joinpath(name).read_text())


def imagenet_wnids() -> List[str]:
    """The 1000 ImageNet-1K wnids in class-index order (sorted)."""
    return list(_timm_list("imagenet_synsets.txt"))


def imagenet_subset_wnids(variant: str) -> List[str]:
    """The 200 wnids of ImageNet-A ('a') or ImageNet-R ('r')."""
    return list(_timm_list(f"imagenet_{variant}_synsets.txt"))


def openai_imagenet_classnames() -> List[str]:
    return list(_clip_benchmark_json("en_classnames.json")["imagenet1k"])


def openai_imagenet_templates() -> List[str]:
    return list(_clip_benchmark_json("en_zeroshot_classification_templates.json")["imagenet1k"])


def imagenet_class_index(path: str | None = None) -> Tuple[List[str], List[str]]:
    """(wnids, names) of the full label space: ImageNet-1K with OpenAI names, or a JSON file of [wnid, name] pairs."""
    if path is None:
        return imagenet_wnids(), openai_imagenet_classnames()
    data = _read_json(path, "a class index: a JSON list of [wnid, name] pairs")
    if not isinstance(data, list) or not all(isinstance(p, list) and len(p) == 2 for p in data):
        raise UtabenchError(f"class index {path} must be a JSON list of [wnid, name] pairs")
    return [p[0] for p in data], [p[1] for p in data]


def read_classnames(path: str, folders: Sequence[str]) -> List[str]:
    """Class names for ImageFolder classes: a JSON list (sorted-folder order) or a {folder: name} mapping."""
    data = _read_json(path, "class names: a JSON list in sorted folder order or a {folder: name} mapping")
    if isinstance(data, dict):
        missing = [f for f in folders if f not in data]
        if missing:
            raise UtabenchError(f"class-name file {path} has no name for folders: {', '.join(missing[:8])}")
        return [data[f] for f in folders]
    if isinstance(data, list) and len(data) == len(folders):
        return [str(x) for x in data]
    raise UtabenchError(
        f"class-name file {path} must list {len(folders)} names (one per class folder) or map folder -> name"
    )


def read_templates(path: str | None) -> List[str]:
    """Prompt templates with `{c}` for the class name: a JSON list or a text file, one per line."""
    if path is None:
        return openai_imagenet_templates()
    p = Path(path)
    if not p.is_file():
        raise UtabenchError(f"templates file {path} does not exist; give a JSON list or a text file of templates")
    if p.suffix == ".json":
        given = _read_json(path, "templates: a JSON list of strings containing {c}")
        if not isinstance(given, list) or not all(isinstance(t, str) for t in given):
            raise UtabenchError(f"templates file {path} must hold a JSON list of strings containing {{c}}")
        numbered = [(f"entry {i}", t) for i, t in enumerate(given)]
    else:
        numbered = [(f"line {i}", line.strip()) for i, line in enumerate(p.read_text().splitlines(), 1)
                    if line.strip()]
    if not numbered:
        raise UtabenchError(f"templates file {path} holds no template; give one per line, each with {{c}}")
    return [_check_template(t.replace("{}", "{c}"), f"templates file {path}, {where}") for where, t in numbered]


def _check_template(template: str, where: str) -> str:
    """A template whose only field is `{c}` (at least once); braces meant literally are written `{{` and `}}`."""
    hint = "the only field a template may have is {c}, the class name (write a literal brace as {{ or }})"
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        if set(fields) - {"c"}:
            raise ValueError(f"has the field {{{sorted(set(fields) - {'c'})[0]}}}")
        template.format(c="class")
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise UtabenchError(f"{where}: {template!r} {exc}; {hint}") from None
    if "c" not in fields:
        raise UtabenchError(f"{where}: {template!r} has no {{c}} (or {{}}) for the class name")
    return template


def _read_json(path: str, what: str):
    p = Path(path)
    if not p.is_file():
        raise UtabenchError(f"{path} does not exist; expected {what}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UtabenchError(f"{path} is not valid JSON ({exc}); expected {what}") from None
