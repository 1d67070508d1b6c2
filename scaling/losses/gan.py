"""Discriminators (PatchGAN, pix2pix / LlamaGen; DINO, in dino_disc) and hinge losses."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.core.config import LossConfig


class PatchDiscriminator(nn.Module):
    """Conv 4x4 stride-2 stack ending in a 1-channel map of per-patch real/fake logits."""

    def __init__(self, layers: int = 3, channels: int = 64):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def build_discriminator(cfg: LossConfig) -> nn.Module:
    """``loss.disc_kind``: PatchGAN, or the DINO discriminator (frozen timm ViT from a local file)."""
    if cfg.disc_kind == "dino":
        from scaling.losses.dino_disc import DinoDiscriminator

        return DinoDiscriminator(cfg)
    return PatchDiscriminator(cfg.disc_layers, cfg.disc_channels)
