"""Task runners; each registers itself in `TASKS` under the name the CLI and configs use."""

from utabench.tasks import detection, llava_bench, retrieval, segmentation, zeroshot_classification  # noqa: F401,E501
