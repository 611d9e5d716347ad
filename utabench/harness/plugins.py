"""Fill the registries: import the modules whose decorators register utabench's backbone families, dataset types,
tasks and tables, then the user's plugin modules named in UTABENCH_PLUGINS (comma-separated importable names),
which register their own the same way (README: Extending utabench)."""

import importlib
import os

from utabench.core.errors import UtabenchError


def load_all() -> None:
    import utabench.backbones  # noqa: F401
    import utabench.datasets  # noqa: F401
    import utabench.pretrain.tables  # noqa: F401
    import utabench.tasks  # noqa: F401

    for name in filter(None, (part.strip() for part in os.environ.get("UTABENCH_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UtabenchError(f"plugin {name!r} (UTABENCH_PLUGINS) could not be imported: {exc}") from None
