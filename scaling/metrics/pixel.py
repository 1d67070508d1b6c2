"""Reconstruction metrics on images in [-1, 1]."""

from __future__ import annotations

import torch

SSIM_WINDOW = 11


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] in float32, clamped as a viewer (or a PNG) would see the image."""
    return (x.float().clamp(-1, 1) + 1) / 2


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8, rounded exactly as torchvision's ``save_image`` writes a PNG."""
    return to_unit(x).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, images mapped to [0, 1] (peak 1) and clamped as a viewer would see them."""
    mse = (to_unit(x) - to_unit(y)).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM on [0, 1] (Wang et al.: 11x11 Gaussian window, sigma 1.5), averaged over the channels and
    over the positions where the window lies inside the image, as Wang et al. and scikit-image do (torchmetrics
    also averages its reflect-padded border)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, full = structural_similarity_index_measure(to_unit(x), to_unit(y), data_range=1.0, kernel_size=SSIM_WINDOW,
                                                  sigma=1.5, return_full_image=True)
    border = SSIM_WINDOW // 2
    return full[..., border:-border, border:-border].flatten(1).mean(1)
