"""User strings that become path components: the one function that turns a backbone, task or dataset name into a
folder or file name, and refuses what cannot be one.

A name keeps `A-Z a-z 0-9 . _ -`; every other run of characters becomes `_` (`clip:ViT-B-16` -> `clip_ViT-B-16`).
The full name is always kept inside the record, and two names of one config that map to the same component are
refused (`distinct_components`), so the mapping never merges two experiments. Refused, before any work: an empty
name, a control character (NUL, newline, ...), a name that is `.`, `..` or starts with `.` (the parent directory, or a
hidden folder that `utabench tables` never reads), and a name longer than MAX_COMPONENT characters (file systems take
255 bytes, and the record's temporary file adds 19 to the dataset's name).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Dict, Iterable

from utabench.core.errors import UtabenchError

MAX_COMPONENT = 200
_OTHER = re.compile(r"[^A-Za-z0-9._-]+")


def _shown(name: str) -> str:
    return repr(name if len(name) <= 60 else name[:57] + "...")


def path_component(name: str, what: str) -> str:
    """The folder / file name for the user-given `name` (`what` says whose, for the error)."""
    if not isinstance(name, str) or not name.strip():
        raise UtabenchError(f"{what} {name!r} is empty; give a name of letters, digits, '.', '_' or '-'")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise UtabenchError(f"{what} {_shown(name)} contains a control character; give a name of letters, digits, "
                            "'.', '_' or '-'")
    part = _OTHER.sub("_", name).strip("_") or "_"
    if part.startswith("."):
        raise UtabenchError(f"{what} {_shown(name)} starts with '.': it would name the parent directory or a hidden "
                            "folder outside the results' tables; give a name that starts with a letter or digit")
    if len(part) > MAX_COMPONENT:
        raise UtabenchError(f"{what} {_shown(name)} has {len(name)} characters, more than a file name takes here "
                            f"(at most {MAX_COMPONENT}); give a shorter name")
    return part


def distinct_components(names: Iterable[str], what: str) -> Dict[str, str]:
    """{name: component} of names that must not share a folder; two that map to one component are refused."""
    seen: Dict[str, str] = {}
    out: Dict[str, str] = {}
    for name in names:
        part = path_component(name, what)
        other = seen.setdefault(part, name)
        if other != name:
            raise UtabenchError(f"{what}s {_shown(other)} and {_shown(name)} would both be stored as {part!r}; give "
                                "them names that differ in letters, digits, '.', '_' or '-'")
        out[name] = part
    return out
