"""Learning-rate schedules stepped once per optimiser step: the shared trainer's default (`warmup_cosine`, a
LambdaLR factor: linear warm-up, cosine to `min_lr`) and timm's warm-up + cosine (`warmup_cosine_steps`) for recipes
that bring their own optimiser (ImageNet fine-tuning, contrastive fine-tuning). timm's schedulers honour each
parameter group's `lr_scale`, which is how layer-wise lr decay reaches the optimiser."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Dict, List

import torch

if TYPE_CHECKING:
    from timm.scheduler import CosineLRScheduler


def warmup_cosine(warmup: int, total: int, lr: float, min_lr: float) -> Callable[[int], float]:
    """Multiplier of `lr` at a step: linear from lr/warmup to lr, then cosine down to min_lr at `total`."""
    floor = min_lr / lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


class StepScheduler:
    """The interface the shared trainer uses (`step`, `get_last_lr`, `state_dict`, `load_state_dict`)."""

    def __init__(self, scheduler: CosineLRScheduler, optimizer: torch.optim.Optimizer):
        self.scheduler, self.optimizer, self.updates = scheduler, optimizer, 0

    def step(self) -> None:
        self.updates += 1
        self.scheduler.step_update(self.updates)

    def get_last_lr(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, Any]:
        return {"updates": self.updates, "timm": self.scheduler.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.scheduler.load_state_dict(state["timm"])
        self.scheduler.step_update(self.updates)


def warmup_cosine_steps(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr: float,
                        warmup_lr_init: float) -> StepScheduler:
    """Linear warm-up from `warmup_lr_init` over `warmup_steps`, then cosine to `min_lr` at `total_steps`."""
    from timm.scheduler import CosineLRScheduler

    scheduler = CosineLRScheduler(optimizer, t_initial=total_steps, lr_min=float(min_lr), warmup_t=warmup_steps,
                                  warmup_lr_init=float(warmup_lr_init), t_in_epochs=False)
    return StepScheduler(scheduler, optimizer)
