"""Sigmoid cross-entropy with the federated loss of Zhou et al. (CenterNet2), as EVA-02 trains on LVIS.

Per batch, the classes scored are those of the ground truth plus classes sampled without replacement, with
probability proportional to image_count ** power (LVIS frequency), until `num_sampled` classes are in; the binary
cross-entropy of the other classes is dropped. The sum is divided by the number of RoIs. The head predicts one logit
per class (no background logit); scores are the sigmoids, with a zero background column appended because mmdet's
box head and NMS expect one.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utabench.core.errors import UtabenchError


class FederatedSigmoidLoss(nn.Module):
    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def __init__(self, num_classes: int, class_image_counts: Sequence[float], num_sampled: int = 50,
                 power: float = 0.5, loss_weight: float = 1.0):
        super().__init__()
        if len(class_image_counts) != num_classes:
            raise UtabenchError(f"federated loss: {len(class_image_counts)} class frequencies for {num_classes} classes")
        self.num_classes, self.num_sampled, self.loss_weight = num_classes, num_sampled, loss_weight
        self.register_buffer("freq_weight", torch.as_tensor(class_image_counts, dtype=torch.float).pow(power),
                             persistent=False)

    def get_cls_channels(self, num_classes: int) -> int:
        return num_classes

    def get_activation(self, cls_score: torch.Tensor) -> torch.Tensor:
        return torch.cat([cls_score.sigmoid(), cls_score.new_zeros(cls_score.shape[0], 1)], dim=1)

    def get_accuracy(self, cls_score: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        fg = labels < self.num_classes
        if not fg.any():
            return {"acc": cls_score.new_tensor(100.0)}
        return {"acc": (cls_score[fg].argmax(1) == labels[fg]).float().mean() * 100}

    def scored_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """The classes whose binary losses count for this batch (ground truth + frequency-weighted samples)."""
        present = torch.unique(labels[labels < self.num_classes])
        if len(present) >= self.num_sampled:
            return present
        prob = self.freq_weight.to(labels.device).clone()
        prob[present] = 0
        extra = min(self.num_sampled - len(present), int((prob > 0).sum()))
        sampled = torch.multinomial(prob, extra, replacement=False) if extra else present.new_zeros(0)
        return torch.cat([present, sampled])

    def forward(self, cls_score: torch.Tensor, labels: torch.Tensor, weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None, reduction_override=None) -> torch.Tensor:
        num_rois = cls_score.shape[0]
        if num_rois == 0:
            return cls_score.sum() * 0
        target = F.one_hot(labels.clamp(max=self.num_classes), self.num_classes + 1)[:, :self.num_classes].float()
        loss = F.binary_cross_entropy_with_logits(cls_score, target, reduction="none")
        mask = cls_score.new_zeros(self.num_classes)
        mask[self.scored_classes(labels)] = 1
        loss = loss * mask[None, :]
        if weight is not None:
            loss = loss * weight.float()[:, None]
        return self.loss_weight * loss.sum() / num_rois
