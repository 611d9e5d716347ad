"""Name -> builder registries, filled by decorators where each family is defined (like timm's @register_model)."""

from __future__ import annotations

from typing import Callable, Dict, Generic, Optional, TypeVar

from utabench.core.errors import UtabenchError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, plural: str):
        self.kind, self.plural = kind, plural
        self._entries: Dict[str, T] = {}
        self._help: Dict[str, str] = {}
        self._schemas: Dict[str, Optional[type]] = {}
        self._checks: Dict[str, Optional[Callable[[str], None]]] = {}

    def register(self, name: str, help: str = "", schema: Optional[type] = None,
                 check: Optional[Callable[[str], None]] = None) -> Callable[[T], T]:
        """Register under `name`; `schema` (a `harness.schema.Schema`) lists the options an entry of it may give;
        `check(model)` refuses, with a UtabenchError, a model name of it that cannot be built (run when a config or
        the command line is read, before anything is built or written)."""
        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            self._help[name] = help or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            self._schemas[name] = schema
            self._checks[name] = check
            return obj

        return decorate

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise UtabenchError(f"unknown {self.kind} {name!r}; known {self.plural}: {known}")
        return self._entries[name]

    def remove(self, name: str) -> None:
        """Take `name` out again (for entries registered by a test or a plugin for a while)."""
        self.get(name)
        for table in (self._entries, self._help, self._schemas, self._checks):
            del table[name]

    def schema(self, name: str) -> Optional[type]:
        """The options schema `name` was registered with (None: it takes no options)."""
        self.get(name)
        return self._schemas[name]

    def check(self, name: str, model: str) -> None:
        """Refuse a model name that `name`'s builder cannot build (when it registered a check)."""
        self.get(name)
        if self._checks[name] is not None:
            self._checks[name](model)

    def names(self):
        return sorted(self._entries)

    def describe(self):
        return [(name, self._help[name]) for name in self.names()]


BACKBONES: Registry = Registry("backbone family", "backbone families")
TASKS: Registry = Registry("task", "tasks")
DATASETS: Registry = Registry("dataset type", "dataset types")
