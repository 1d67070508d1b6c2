"""Evaluation pictures: grids of originals above their reconstructions, and of samples; histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from scaling.metrics.pixel import to_unit


def save_recon_grid(originals: torch.Tensor, recons: torch.Tensor, path: Path, n: int = 8) -> Path:
    """Row 1: originals, row 2: reconstructions ([-1, 1] images), written as PNG."""
    n = min(n, len(originals))
    return save_image_grid(torch.cat([originals[:n], recons[:n]]), path, nrow=n)


def save_image_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """[-1, 1] images as one PNG grid, ``nrow`` per row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_unit(images).cpu(), path, nrow=nrow, padding=1)
    return path


def save_histogram(values: torch.Tensor | np.ndarray, path: Path, xlabel: str, title: str, bins: int = 100) -> Path:
    """A histogram of ``values`` as PNG (matplotlib's object API: no pyplot state, no display)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(np.asarray(values).ravel(), bins=bins, color="tab:blue")
    ax.set(xlabel=xlabel, ylabel="tokens", title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
