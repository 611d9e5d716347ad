"""Task runners; each registers itself in `TASKS` under the name the CLI and configs use."""

from utabench.tasks import (  # noqa: F401  (registration)
    datacomp,
    detection,
    few_shot,
    finetune_classification,
    knn,
    linear_probe,
    llava_bench,
    retrieval,
    segmentation,
    winogavil,
    zeroshot_classification,
)
