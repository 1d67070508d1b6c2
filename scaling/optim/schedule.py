"""Learning-rate schedules as multipliers of the base rate, for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math
from collections.abc import Callable

from scaling.core.config import OptimConfig


def lr_multiplier(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine to ``min_lr``, constant, or warm-up-stable-decay (linear decay tail)."""
    floor = cfg.min_lr / cfg.lr
    warmup = cfg.warmup_steps

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        decay_start = total_steps - (cfg.decay_steps or int(cfg.decay_fraction * total_steps))
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, total_steps - decay_start))
        return 1.0 - (1 - floor) * progress

    return multiplier
