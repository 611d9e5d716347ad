"""Fill the registries: import the modules whose decorators register utabench's backbone families, dataset types,
tasks and tables."""


def load_all() -> None:
    import utabench.backbones  # noqa: F401
    import utabench.datasets  # noqa: F401
    import utabench.pretrain.tables  # noqa: F401
    import utabench.tasks  # noqa: F401
