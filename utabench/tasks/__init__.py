"""Task runners; each registers itself in `TASKS` under the name the CLI and configs use."""

from utabench.tasks import (  # noqa: F401,E501
    detection,
    llava_bench,
    retrieval,
    segmentation,
    zeroshot_classification,
)
