"""Image grids of originals above their reconstructions."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image


def save_recon_grid(originals: torch.Tensor, recons: torch.Tensor, path: Path, n: int = 8) -> Path:
    """Row 1: originals, row 2: reconstructions ([-1, 1] images), written as PNG."""
    n = min(n, len(originals))
    grid = torch.cat([originals[:n], recons[:n]]).float().clamp(-1, 1).add(1).div(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid.cpu(), path, nrow=n, padding=1)
    return path
