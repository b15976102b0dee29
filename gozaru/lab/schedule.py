"""Learning-rate schedules. Python owns the schedule; the optimizer only receives the lr of each step."""
from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0,
                  min_lr_ratio: float = 0.1) -> float:
    """The lr for optimizer step ``step`` (0-based): linear warmup, then cosine decay to ``min_lr_ratio * peak_lr``.

    Warmup starts at ``peak_lr / warmup_steps`` (never at 0, which would waste a step) and reaches ``peak_lr``
    at step ``warmup_steps - 1``; the cosine runs over the remaining steps and ends at its floor on the last step.
    Steps past ``total_steps`` stay at the floor.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    floor = peak_lr * min_lr_ratio
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 1:
        return peak_lr
    progress = min(1.0, (step - warmup_steps) / (decay_steps - 1))
    return floor + 0.5 * (peak_lr - floor) * (1.0 + math.cos(math.pi * progress))
