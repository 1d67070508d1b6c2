"""DINO discriminator (StyleGAN-T / VAR style, GigaTok's variant): a frozen timm ViT with small trainable
heads on four evenly spaced blocks, and DiffAug on every input, real or fake.

The backbone's weights come from a local file (``loss.disc_backbone_weights``), as the semantic teacher's.
Gradients reach the input through the frozen backbone (the generator needs them); its weights get none.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from scaling.core.config import LossConfig
from scaling.models.backbones import FrozenTimm

TAPS = 4  # heads on blocks depth/4, depth/2, 3depth/4 and the last


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """DiffAug (Zhao et al. 2020), policy colour + translation + cutout, independently per image; every op
    is differentiable in ``x``. Images in [-1, 1]."""
    brightness, saturation, contrast = torch.rand(3, x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
    x = x + brightness - 0.5
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (2 * saturation) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (contrast + 0.5) + mean
    return _cutout(_translate(x, 0.125), 0.5)


def _translate(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Shift by whole pixels, up to ``ratio`` of the side either way, zero fill."""
    b, _, h, w = x.shape
    max_shift = torch.tensor([w, h], device=x.device) * ratio // 1
    shift = torch.floor(torch.rand(b, 2, device=x.device) * (2 * max_shift + 1)) - max_shift  # pixels, (x, y)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = -2 * shift / torch.tensor([w, h], device=x.device)  # normalised coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero one square of ``ratio`` of the side per image, at a random place (it may cross the border)."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_h % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_w % 2), (b, 1, 1), device=x.device)
    top, left = cy - size_h // 2, cx - size_w // 2
    ys, xs = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + size_h) & (xs >= left) & (xs < left + size_w)
    return x * (~inside)[:, None].to(x.dtype)


def _head(width: int) -> nn.Sequential:
    """Per-token logits from one block's tokens, (B, width, N) -> (B, 1, N): spectrally normalised 1D convs
    along the token sequence (StyleGAN-T's head)."""
    return nn.Sequential(
        spectral_norm(nn.Conv1d(width, width, 1, bias=False)), nn.BatchNorm1d(width), nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv1d(width, width, 9, padding=4, padding_mode="circular", bias=False)),
        nn.BatchNorm1d(width), nn.LeakyReLU(0.2), spectral_norm(nn.Conv1d(width, 1, 1)))  # no bias before a norm


class DinoDiscriminator(nn.Module):
    """``forward(x)`` -> (B, 1, TAPS * tokens) real/fake logits; DiffAug first while training."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.backbone = FrozenTimm(cfg.disc_backbone, cfg.disc_backbone_weights, cfg.disc_backbone_size,
                                   "loss.disc_backbone_weights")
        depth = len(self.backbone.model.blocks)
        self.taps = sorted({max(0, (i + 1) * depth // TAPS - 1) for i in range(TAPS)})
        self.heads = nn.ModuleList(_head(self.backbone.model.num_features) for _ in self.taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = diff_augment(x)
        feats = self.backbone.model.forward_intermediates(self.backbone.prepare(x), indices=self.taps, norm=False,
                                                         output_fmt="NLC", intermediates_only=True)
        return torch.cat([head(f.transpose(1, 2)) for head, f in zip(self.heads, feats)], dim=-1)
