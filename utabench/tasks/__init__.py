"""Task runners; each registers itself in `TASKS` under the name the CLI and configs use."""

from utabench.tasks import detection, retrieval, segmentation, zeroshot_classification  # noqa: F401  (registration)
