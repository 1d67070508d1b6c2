"""What a training run will cost before it runs: its FLOPs (``count.step_flops`` over the steps it will take)
and the GPU-hours those take at a given MFU of a GPU's bf16 peak."""

from __future__ import annotations

from dataclasses import replace

from scaling.core.config import Config, ConfigError
from scaling.core.errors import UserError
from scaling.plan.count import step_flops, step_flops_done

# bf16 dense peak per GPU, TFLOP/s (NVIDIA datasheets, SXM parts, no sparsity)
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
# The share of the peak a training step reaches when nothing better is known: GigaTok B-L's whole step on one
# H200 (benchmarks/README.md, 2026-12-04), 13.3%.
DEFAULT_MFU = 0.13


def planned_run(cfg: Config, parts: dict[str, int] | None = None) -> tuple[int, int]:
    """A whole training run's steps and FLOPs, as it will log them: ``train.steps`` steps of ``train.batch_size``
    images, or with ``train.flops_budget`` the step count whose FLOPs come nearest the budget (within half a
    step). A budget that buys no more steps than the warm-up is refused. ``parts``: ``step_flops(cfg)`` where the
    caller has it already (counting it builds the model on the meta device)."""
    parts = parts if parts is not None else step_flops(cfg)
    steps = cfg.train.steps
    if cfg.train.flops_budget > 0:
        steps = _budget_steps(parts, cfg)
        if steps <= cfg.optim.warmup_steps:
            raise ConfigError(f"train.flops_budget: {cfg.train.flops_budget:.3g} FLOPs buy {steps} steps of "
                              f"{cfg.train.batch_size} images, not more than optim.warmup_steps "
                              f"({cfg.optim.warmup_steps})")
    return steps, step_flops_done(parts, steps, cfg.train.batch_size, cfg.loss.gan_start)


def run_flops(cfg: Config) -> int:
    """FLOPs of a whole training run (``planned_run``)."""
    return planned_run(cfg)[1]


def own_flops(cfg: Config, parts: dict[str, int] | None = None) -> int:
    """FLOPs a run spends itself: a cooldown branch's whole-run count (what it logs) less its trunk's share.
    ``parts``: ``step_flops(cfg)`` where the caller has it (a branch's are its trunk's)."""
    parts = parts if parts is not None else step_flops(cfg)
    return planned_run(cfg, parts)[1] - trunk_flops(cfg, parts)


def trunk_flops(cfg: Config, parts: dict[str, int] | None = None) -> int:
    """A cooldown branch's FLOPs before its branch step, which its trunk spent; 0 for any other run."""
    if not cfg.train.branch_from:
        return 0
    parts = parts if parts is not None else step_flops(cfg)
    return step_flops_done(parts, cfg.train.branch_step, cfg.train.batch_size, cfg.loss.gan_start)


def with_budget_steps(cfg: Config) -> Config:
    """``cfg`` with ``train.steps`` those its ``train.flops_budget`` buys (``planned_run``); unchanged without a
    budget."""
    if cfg.train.flops_budget <= 0:
        return cfg
    return replace(cfg, train=replace(cfg.train, steps=planned_run(cfg)[0]))


def _budget_steps(parts: dict[str, int], cfg: Config) -> int:
    """The step count whose FLOPs are nearest the budget: they grow with every step (the discriminator's joining
    at ``loss.gan_start`` only steepens them), so the first count at or past it, or the one before."""
    def spent(steps: int) -> int:
        return step_flops_done(parts, steps, cfg.train.batch_size, cfg.loss.gan_start)

    budget = cfg.train.flops_budget
    hi = 1
    while spent(hi) < budget:
        hi *= 2
    lo = hi // 2  # spent(lo) < budget <= spent(hi), or hi == 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if spent(mid) < budget else (lo, mid)
    return hi if hi == 1 or spent(hi) - budget <= budget - spent(lo) else lo


def peak_tflops(gpu: str) -> float:
    """The bf16 dense peak of a GPU named like ``H100`` (or a name that contains one)."""
    found = next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in gpu.lower()), None)
    if found is None:
        raise UserError(f"gpu {gpu!r}: unknown; one of {', '.join(PEAK_BF16_TFLOPS)}")
    return found


def gpu_hours(flops: float, gpu: str, mfu: float = DEFAULT_MFU) -> float:
    """GPU-hours ``flops`` take on ``gpu`` at ``mfu`` of its bf16 peak."""
    return flops / (peak_tflops(gpu) * 1e12 * mfu) / 3600
