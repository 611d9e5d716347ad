"""The torchvision shim: import works, and its nms matches a brute-force greedy suppression."""

from __future__ import annotations

import torch
import torchvision
from torchvision.ops import batched_nms, nms

from utabench import torchvision_shim


def _greedy(boxes, scores, threshold):
    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -float(scores[i])):
        if all(torchvision.ops.box_iou(boxes[i:i + 1], boxes[j:j + 1]).item() <= threshold for j in keep):
            keep.append(i)
    return keep


def _boxes(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 20], dim=1), torch.rand(n, generator=g), g


def test_nms_matches_greedy_reference():
    boxes, scores, g = _boxes(0, 60)
    for threshold in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, threshold).tolist() == _greedy(boxes, scores, threshold)
    groups = torch.randint(0, 3, (60,), generator=g)
    kept = batched_nms(boxes, scores, groups, 0.5)
    assert sorted(kept.tolist()) == sorted(
        i for c in range(3) for i in [torch.nonzero(groups == c).flatten()[k].item()
                                      for k in _greedy(boxes[groups == c], scores[groups == c], 0.5)])


def test_the_shims_own_kernel_matches_greedy_suppression():
    """The shim's kernel itself (torchvision.ops.nms above may be torchvision's own where its ops load)."""
    boxes, scores, _ = _boxes(1, 50)
    for threshold in (0.2, 0.5, 0.8):
        assert torchvision_shim._nms_cpu(boxes, scores, threshold).tolist() == _greedy(boxes, scores, threshold)
    assert torchvision_shim._nms_cpu(boxes[:0], scores[:0], 0.5).numel() == 0


def test_install_defines_the_ops_once():
    """A second install must not define the op schemas again (torch refuses that); where the shim is in use the
    registered op is its kernel."""
    installed = torchvision_shim._library is not None  # set when `import utabench` installed it (conftest)
    assert torchvision_shim.install() is installed and torchvision_shim.install() is installed
    assert hasattr(torch.ops.torchvision, "nms")
    if installed:
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
        scores = torch.tensor([0.9, 0.8, 0.7])
        assert torch.ops.torchvision.nms(boxes, scores, 0.5).tolist() == [0, 2]
