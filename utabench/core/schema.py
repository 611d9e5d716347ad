"""Typed schemas for everything utabench reads from a user (pydantic): run configs, settings, backbone options,
dataset entries, task options, pretraining and LLaVA recipes, command-line values.

A typo must never run the wrong experiment, so every schema refuses keys it does not know: the error names the
key, the closest allowed one and the full list. A value of the wrong type or outside its range is refused with the
value shown. Either way the user gets one line (a `UtabenchError`), before any work starts.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Iterable, List, Type, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from utabench.core.errors import UtabenchError

S = TypeVar("S", bound="Schema")


def did_you_mean(name: Any, known: Iterable[str], n: int = 1) -> str:
    """' did you mean 'x'?' (or 'x', 'y' or 'z') for the up to `n` known names closest to `name`; '' if none is."""
    close = [repr(c) for c in difflib.get_close_matches(str(name), list(known), n=n, cutoff=0.6)]
    if not close:
        return ""
    return f" did you mean {', '.join(close[:-1]) + ' or ' + close[-1] if len(close) > 1 else close[0]}?"


def unknown_key_message(key: Any, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    close = did_you_mean(key, allowed)
    hint = f";{close}" if close else ";"
    shown = ", ".join(allowed) if allowed else "none"
    return f"unknown key {key!r}{hint} allowed keys: {shown}"


def check_keys(data: Dict[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse the first key of `data` that is not in `allowed`, naming `where` it was found."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise UtabenchError(f"{where}: {unknown_key_message(key, allowed)}")


class Schema(BaseModel):
    """Base of every configuration schema: unknown keys are refused with the closest allowed key named."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = cls.keys()
            for key in data:
                if key not in allowed:
                    raise ValueError(unknown_key_message(key, allowed))
        return data

    @classmethod
    def keys(cls) -> List[str]:
        return [field.alias or name for name, field in cls.model_fields.items()]


def _location(loc, name: Callable[[str], str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part).startswith(("function-", "literal")):
            continue  # pydantic's names for union members and validators, not part of the user's path
        else:
            out += ("." if out else "") + name(str(part))
    return out


def describe(exc: ValidationError, name: Callable[[str], str] = str) -> str:
    """The first error of a validation as one line: where, what is wrong, and the value that was given."""
    error = exc.errors(include_url=False)[0]
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] not in ("value_error", "assertion_error", "missing"):
        message += f" (got {error['input']!r})"
    where = _location(error["loc"], name)
    return f"{where}: {message}" if where else message


def validate(schema: Type[S], data: Any, where: str, name: Callable[[str], str] = str) -> S:
    """`schema` built from `data`, or a one-line UtabenchError that starts with `where`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UtabenchError(f"{where}: expected a mapping of {', '.join(schema.keys())}, got {data!r}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise UtabenchError(f"{where}: {describe(exc, name)}") from None


def validated_dict(schema: Type[Schema], data: Any, where: str, name: Callable[[str], str] = str,
                   defaults: bool = False) -> Dict[str, Any]:
    """The validated values as a plain dict: with `defaults`, every field; otherwise only those given."""
    model = validate(schema, data, where, name)
    return model.model_dump() if defaults else model.model_dump(exclude_unset=True)


def flag_name(field: str) -> str:
    """How a settings field is spelled on the command line."""
    return "--" + field.replace("_", "-")
