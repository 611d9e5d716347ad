"""Dense transfer (detection and segmentation) through mmdet and mmseg: importing this package registers utabench's
parts in their registries, so recipes name them like any mmdet / mmseg module (`custom_imports` in the configs):
the `UtabenchViT` backbone, the `SimpleFeaturePyramid` neck and `LN2d`, the `FederatedSigmoidLoss`, the
`SquarePadDetDataPreprocessor`, the `LayerDecayConstructor` and the `KeptAreasIoUMetric`.
"""

import numpy as np

from utabench.dense.federated_loss import FederatedSigmoidLoss
from utabench.dense.iou_areas import KeptAreasIoUMetric
from utabench.dense.layer_decay import LayerDecayConstructor
from utabench.dense.necks import LN2d, SimpleFeaturePyramid
from utabench.dense.square_pad import SquarePadDetDataPreprocessor
from utabench.dense.vit import UtabenchViT


def _register() -> None:
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET_CONSTRUCTORS
    from mmengine.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
    from mmseg.registry import METRICS as SEG_METRICS
    from mmseg.registry import MODELS as SEG_MODELS
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as SEG_CONSTRUCTORS

    for registry in (MODELS, DET_MODELS, SEG_MODELS):
        for module in (UtabenchViT, SimpleFeaturePyramid, LN2d, FederatedSigmoidLoss):
            registry.register_module(module=module, force=True)
    DET_MODELS.register_module(module=SquarePadDetDataPreprocessor, force=True)
    for registry in (OPTIM_WRAPPER_CONSTRUCTORS, DET_CONSTRUCTORS, SEG_CONSTRUCTORS):
        registry.register_module(module=LayerDecayConstructor, force=True)
    SEG_METRICS.register_module(module=KeptAreasIoUMetric, force=True)


if not hasattr(np, "float"):
    np.float = float  # lvis 0.5.3 (the newest) still uses the alias numpy removed in 1.24
_register()
