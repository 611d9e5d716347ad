"""Make torchvision importable where its compiled ops cannot load (a CUDA build of torchvision on a CPU torch).

On such a machine `import torchvision` fails with `operator torchvision::nms does not exist`. Before torchvision is
imported anywhere, this module tries to load torchvision's own extension library; only when that fails does it define
the two op schemas that import needs (`torchvision::nms`, `torchvision::qnms`) with a pure-torch CPU kernel for `nms`,
and lets `torchvision.ops.nms` / `batched_nms` use it. Where torchvision's ops load it does nothing.
"""

from __future__ import annotations

import importlib.util
import os

import torch

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_library = None  # keeps the FRAGMENT registration alive


def _own_ops_load() -> bool:
    if hasattr(torch.ops.torchvision, "nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision installed: nothing to patch
    folder = spec.submodule_search_locations[0]
    for name in sorted(os.listdir(folder)):
        if name.startswith("_C.") and name.endswith((".so", ".pyd")):
            try:
                torch.ops.load_library(os.path.join(folder, name))
            except (OSError, RuntimeError):
                return False
            return hasattr(torch.ops.torchvision, "nms")
    return False


def _nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; same contract as torchvision's kernel (indices by decreasing score)."""
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True, stable=True)
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=dets.device)
    keep = []
    for position, i in enumerate(order.tolist()):
        if suppressed[position]:
            continue
        keep.append(i)
        rest = order[position + 1 :]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[position + 1 :] |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def install() -> bool:
    """Install the shim if needed. Returns True when it was installed, False when torchvision's own ops load."""
    global _library
    if _library is not None:
        return True
    if _own_ops_load():
        return False
    _library = torch.library.Library("torchvision", "FRAGMENT")
    _library.define("nms" + _SCHEMA)
    _library.define("qnms" + _SCHEMA)
    _library.impl("nms", _nms_cpu, "CPU")
    import torchvision.ops.boxes as boxes

    boxes._assert_has_ops = lambda: None  # the kernel above is the op now
    return True
