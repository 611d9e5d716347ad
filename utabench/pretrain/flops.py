"""FLOPs of one training step, counted with torch's FLOP counter (`torch.utils.flop_counter.FlopCounterMode`).

Counted on a real batch from the recipe's dataset: the teacher's forward, and the student's forward + backward,
separately. Nothing is updated and the RNG is restored afterwards, so counting does not change the run.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode


def step_flops(recipe, batch_size: int, device: str = "cpu") -> Dict[str, float]:
    """{"teacher": forward FLOPs, "student": forward+backward FLOPs, "total", and the same per image} for a batch
    of `batch_size` samples of the recipe's data."""
    batch = default_collate([recipe.dataset[(i % len(recipe.dataset), 0)] for i in range(batch_size)])
    module = recipe.module.to(device)
    was_training = module.training
    module.train()
    with torch.random.fork_rng(devices=[torch.device(device)] if torch.device(device).type == "cuda" else []):
        with FlopCounterMode(display=False) as total_counter:
            loss = recipe.loss(module, batch, torch.device(device))
            loss.backward()
        with FlopCounterMode(display=False) as teacher_counter:
            recipe.teacher_tokens(batch["image"].to(device))
    module.zero_grad(set_to_none=True)
    module.train(was_training)
    total = float(total_counter.get_total_flops())
    teacher = float(teacher_counter.get_total_flops())
    out = {"teacher": teacher, "student": total - teacher, "total": total}
    out.update({f"{k}_per_image": v / batch_size for k, v in list(out.items())})
    return out
