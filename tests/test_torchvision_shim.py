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


def test_nms_matches_greedy_reference():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 20], dim=1)
    scores = torch.rand(60, generator=g)
    for threshold in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, threshold).tolist() == _greedy(boxes, scores, threshold)
    groups = torch.randint(0, 3, (60,), generator=g)
    kept = batched_nms(boxes, scores, groups, 0.5)
    assert sorted(kept.tolist()) == sorted(
        i for c in range(3) for i in [torch.nonzero(groups == c).flatten()[k].item()
                                      for k in _greedy(boxes[groups == c], scores[groups == c], 0.5)])


def test_install_is_idempotent():
    assert hasattr(torch.ops.torchvision, "nms")
    first = torchvision_shim.install()
    assert torchvision_shim.install() == first
