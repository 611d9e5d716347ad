"""Dataset readers for the standard on-disk layouts; each registers a `type` in `DATASETS`."""

from utabench.datasets import classification, dense, llava, retrieval, wds, winogavil  # noqa: F401  (registration)
