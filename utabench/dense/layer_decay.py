"""Layer-wise learning-rate decay for dense fine-tuning, shared by detection and segmentation configs.

scale = layer_decay_rate ** (num_layers + 1 - layer_id), where the backbone numbers its parameters (embeddings 0,
block i -> i + 1) and everything outside it (neck, heads) is num_layers + 1. By default (BEiT's rule, the
segmentation recipes) one-dimensional parameters (norms, biases, layer scales) and position embeddings get no weight
decay; with `weight_decay_all=True` (EVA-02's detection recipe, which sets detectron2's `weight_decay_norm=None` and
no overrides) every parameter decays. Config: `optim_wrapper=dict(constructor='LayerDecayConstructor',
paramwise_cfg=dict(layer_decay_rate=0.7, weight_decay_all=False), ...)`.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from utabench.core.errors import UtabenchError


class LayerDecayConstructor(DefaultOptimWrapperConstructor):
    def add_params(self, params: List[dict], module: nn.Module, prefix: str = "", is_dcn_module=None) -> None:
        backbone = getattr(module, "backbone", None)
        if not hasattr(backbone, "layer_id"):
            raise UtabenchError("layer-wise lr decay needs a backbone that numbers its layers (UtabenchViT)")
        rate = float(self.paramwise_cfg.get("layer_decay_rate", 1.0))
        decay_all = bool(self.paramwise_cfg.get("weight_decay_all", False))
        top = backbone.num_layers + 1
        groups: Dict[Tuple[int, bool], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            layer = backbone.layer_id(name[len("backbone."):]) if name.startswith("backbone.") else top
            no_decay = not decay_all and (param.ndim == 1 or name.endswith((".bias", "pos_embed")))
            scale = rate ** (top - layer)
            group = groups.setdefault((layer, no_decay), {
                "params": [], "lr": self.base_lr * scale, "weight_decay": 0.0 if no_decay else self.base_wd,
                "lr_scale": scale, "layer_id": layer,
            })
            group["params"].append(param)
        params.extend(groups[key] for key in sorted(groups))
