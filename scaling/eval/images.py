"""Image grids: originals above their reconstructions, and samples."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image


def save_recon_grid(originals: torch.Tensor, recons: torch.Tensor, path: Path, n: int = 8) -> Path:
    """Row 1: originals, row 2: reconstructions ([-1, 1] images), written as PNG."""
    n = min(n, len(originals))
    return save_image_grid(torch.cat([originals[:n], recons[:n]]), path, nrow=n)


def save_image_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """[-1, 1] images as one PNG grid, ``nrow`` per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float().clamp(-1, 1).add(1).div(2).cpu(), path, nrow=nrow, padding=1)
    return path
