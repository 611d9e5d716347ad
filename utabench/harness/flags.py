"""Command-line flags made from schemas: a task's options and its dataset types' keys become the flags of
`utabench run TASK`, so each task's `--help` lists what it takes and a new task needs no change here.

Every generated flag takes text; the schema converts and checks it (`--iters 5` becomes 5, a bad value is one
line), and structured options parse their own text (`--stage1 DATA.json:IMAGES`, `--judge offline`).
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Iterable, Type

from utabench.core.schema import Schema, flag_name


def literal_help(text: str) -> str:
    """Help text that argparse prints as it is: it %-formats help strings, so a `%` of a table title or a schema's
    description must be doubled."""
    return text.replace("%", "%%")


def add_schema_flags(parser: argparse.ArgumentParser, schemas: Iterable[Type[Schema]], title: str) -> None:
    """One `--key` flag per field of the schemas (a field two schemas share is added once)."""
    group = parser.add_argument_group(title)
    seen = set()
    for schema in schemas:
        for name, field in schema.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            group.add_argument(flag_name(name), dest=f"field_{name}", metavar=name.upper(),
                               help=literal_help(field.description or ""))


def schema_values(args: argparse.Namespace) -> Dict[str, Any]:
    """The generated flags that were given, under their schema keys."""
    return {key[len("field_"):]: value for key, value in vars(args).items()
            if key.startswith("field_") and value is not None}
