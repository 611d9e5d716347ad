"""Fill the registries: importing this module imports the modules whose decorators register utabench's backbone
families, dataset types, tasks and tables; `load_all` then imports the user's plugin modules named in UTABENCH_PLUGINS
(comma-separated importable names), which register their own the same way (README: Extending utabench)."""

import importlib
import os

import utabench.backbones  # noqa: F401  (registration)
import utabench.datasets  # noqa: F401
import utabench.pretrain.table_pe  # noqa: F401
import utabench.pretrain.table_teacher  # noqa: F401
import utabench.pretrain.table_text  # noqa: F401
import utabench.pretrain.tables  # noqa: F401
import utabench.tasks  # noqa: F401
from utabench.core.errors import UtabenchError


def load_all() -> None:
    for name in filter(None, (part.strip() for part in os.environ.get("UTABENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UtabenchError(f"plugin {name!r} (UTABENCH_PLUGINS) could not be imported: {exc}") from None
