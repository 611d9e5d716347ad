"""Config files: YAML mappings, `${VAR}` from the environment, `{world}` for the embedded world's directory, and the
configs bundled with utabench."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import yaml

from utabench.core.errors import UtabenchError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply `fn` to every string inside nested lists and dicts."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    return value


def expand_env(value: Any, source: str, given: Optional[Dict[str, str]] = None) -> Any:
    """`${VAR}` replaced by `given`'s value (the command line's), else the environment's; an unset variable is an
    error naming it and `source`."""
    values = {**os.environ, **(given or {})}

    def var(match):
        name = match.group(1)
        if name not in values:
            flag = " (or pass --data DIR)" if name == "DATA" else ""
            raise UtabenchError(f"{source} uses ${{{name}}} but the environment variable {name} is not set{flag}")
        return values[name]
    return map_strings(value, lambda text: _VAR.sub(var, text))


def with_world(value: Any, world: Optional[Path] | Callable[[], Path]) -> Any:
    """`{world}` replaced by the embedded world's directory (`world` may be a function that makes it when first
    needed); a `{world}` path without a world is an error."""
    found = {}

    def substitute(text: str) -> str:
        if "{world}" not in text:
            return text
        if "root" not in found:
            found["root"] = world() if callable(world) else world
        if found["root"] is None:
            raise UtabenchError(f"{text!r} refers to {{world}} but this config generates no world (add `world:`)")
        return text.replace("{world}", str(found["root"]))
    return map_strings(value, substitute)


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
    """A config shipped in utabench/configs/."""
    return Path(str(resources.files("utabench.configs").joinpath(name)))
