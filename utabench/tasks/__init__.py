"""Task runners; each registers itself in `TASKS` under the name the CLI and configs use."""

from utabench.tasks import (  # noqa: F401  (registration)
    detection,
    finetune_classification,
    llava_bench,
    retrieval,
    segmentation,
    zeroshot_classification,
)
