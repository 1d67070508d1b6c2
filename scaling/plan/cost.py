"""What a training run will cost before it runs: its FLOPs (``count.step_flops`` over the steps it will take)
and the GPU-hours those take at a given MFU of a GPU's bf16 peak."""

from __future__ import annotations

from scaling.core.config import Config
from scaling.core.errors import UserError
from scaling.plan.count import step_flops, step_flops_done

# bf16 dense peak per GPU, TFLOP/s (NVIDIA datasheets, SXM parts, no sparsity)
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
# The share of the peak a training step reaches when nothing better is known: GigaTok B-L's whole step on one
# H200 (benchmarks/README.md, 2026-12-04), 13.3%.
DEFAULT_MFU = 0.13


def run_flops(cfg: Config) -> int:
    """FLOPs of a whole training run: ``train.steps`` steps of ``train.batch_size`` images, as it logs them."""
    return step_flops_done(step_flops(cfg), cfg.train.steps, cfg.train.batch_size, cfg.loss.gan_start)


def peak_tflops(gpu: str) -> float:
    """The bf16 dense peak of a GPU named like ``H100`` (or a name that contains one)."""
    found = next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in gpu.lower()), None)
    if found is None:
        raise UserError(f"gpu {gpu!r}: unknown; one of {', '.join(PEAK_BF16_TFLOPS)}")
    return found


def gpu_hours(flops: float, gpu: str, mfu: float = DEFAULT_MFU) -> float:
    """GPU-hours ``flops`` take on ``gpu`` at ``mfu`` of its bf16 peak."""
    return flops / (peak_tflops(gpu) * 1e12 * mfu) / 3600
