"""mmseg's IoUMetric that also keeps each image's areas (intersection, union, prediction and label pixels per class)
in a file, so the segmentation record's mIoU, mAcc and aAcc get bootstrap intervals over images
(tasks/bootstrap.py). Its metrics are IoUMetric's, unchanged; fill_recipe puts it in place of a recipe's IoUMetric.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from mmseg.evaluation.metrics import IoUMetric

from utabench.core.io import atomic_write


class KeptAreasIoUMetric(IoUMetric):
    def __init__(self, areas_file: str, **kwargs):
        super().__init__(**kwargs)
        self.areas_file = areas_file

    def compute_metrics(self, results: list):
        """On the main process, with every image's results in dataset order: write the areas, then IoUMetric's."""
        if not self.format_only:
            areas = {name: np.stack([np.asarray(r[i], dtype=np.float64) for r in results])
                     for i, name in enumerate(("intersect", "union", "pred", "label"))}
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **areas)
            atomic_write(Path(self.areas_file), lambda tmp: tmp.write_bytes(buffer.getvalue()))
        return super().compute_metrics(results)
