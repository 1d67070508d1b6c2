"""Vector quantisers. Each returns a ``QuantOut`` with its losses and codebook statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.config import QuantizerConfig


@dataclass
class QuantOut:
    z_q: torch.Tensor  # quantised latents, same shape as the input, straight-through gradients
    indices: torch.Tensor  # code ids, the input's shape without the channel dim: (B, H, W) or (B, N)
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor
    entropy_loss: torch.Tensor  # zero (and not computed) unless asked for

    def usage(self, codebook_size: int) -> tuple[float, float]:
        """(share of codes used, perplexity) of this batch's assignments."""
        return codebook_stats(self.indices, codebook_size)


def codebook_stats(indices: torch.Tensor, codebook_size: int) -> tuple[float, float]:
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).float().mean()), float(entropy.exp())


def entropy_loss(sq_dist: torch.Tensor, temperature: float) -> torch.Tensor:
    """GigaTok/MAGVIT entropy penalty: mean per-token entropy minus entropy of the mean assignment.

    Low per-token entropy makes assignments confident; high entropy of the batch-mean spreads use
    over the codebook.
    """
    logits = -sq_dist / temperature
    probs = logits.softmax(dim=-1)
    log_probs = logits.log_softmax(dim=-1)
    per_token = -(probs * log_probs).sum(-1).mean()
    mean_probs = probs.mean(0)
    batch = -(mean_probs * (mean_probs + 1e-10).log()).sum()
    return per_token - batch


class VectorQuantizer(nn.Module):
    """VQ with l2-normalised codes and inputs (cosine-distance lookup), codebook + commitment losses."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        self.codebook = nn.Embedding(cfg.codebook_size, cfg.code_dim)

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.codebook.weight, -1.0 / self.cfg.codebook_size, 1.0 / self.cfg.codebook_size)

    def forward(self, z: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        """``z``: (B, C, H, W) grids or (B, C, N) token sequences."""
        b, c, *spatial = z.shape
        flat = z.movedim(1, -1).reshape(-1, c).float()
        codes = self.codebook.weight.float()
        if self.cfg.l2_norm:
            flat = F.normalize(flat, dim=-1)
            codes = F.normalize(codes, dim=-1)
        sq_dist = flat.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat @ codes.t()
        indices = sq_dist.argmin(1)
        quant = codes[indices]
        codebook_loss = F.mse_loss(quant, flat.detach())
        commit_loss = self.cfg.beta * F.mse_loss(flat, quant.detach())
        ent = entropy_loss(sq_dist, entropy_temperature) if entropy_temperature else flat.new_zeros(())
        quant = flat + (quant - flat).detach()  # straight-through estimator
        z_q = quant.view(b, *spatial, c).movedim(-1, 1).to(z.dtype)
        return QuantOut(z_q, indices.view(b, *spatial), codebook_loss, commit_loss, ent)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for (B, H, W) or (B, N) ids, as (B, C, H, W) or (B, C, N)."""
        codes = self.codebook.weight
        if self.cfg.l2_norm:
            codes = F.normalize(codes, dim=-1)
        return codes[indices].movedim(-1, 1)


def build_quantizer(cfg: QuantizerConfig) -> nn.Module:
    if cfg.kind == "vq":
        return VectorQuantizer(cfg)
    raise ValueError(f"quantizer.kind {cfg.kind!r}")
