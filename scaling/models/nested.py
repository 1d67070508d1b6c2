"""Nested dropout of 1D tokens (FlexTok, One-D-Piece): ordered tokens, any prefix decodes.

In training every image keeps a random prefix of its K quantised tokens; the tail is replaced by one learned
mask code before the decoder. The decoder learns to decode any prefix, and the encoder learns to put the
coarse content into the first tokens. At evaluation ``keep`` chooses the prefix; ids of a prefix
(``complete``) are padded with the mask code.

DetailFlow's coarse-to-fine tokens (``model.coarse_to_fine``) add targets to the prefixes: a prefix of k of K
tokens is trained against the image degraded to side ``target_side`` (DetailFlow's power map, from 1 pixel for
one token to the whole image for all), so the first tokens carry the coarse image and later ones its detail.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class NestedDropout(nn.Module):
    def __init__(self, code_dim: int):
        super().__init__()
        self.mask = nn.Parameter(torch.empty(code_dim))

    def reset_parameters(self) -> None:
        # Near zero: far from every (unit-norm) code, so the decoder can tell a masked token from a kept one.
        nn.init.trunc_normal_(self.mask, std=0.02, a=-0.04, b=0.04)

    @staticmethod
    def sample(batch: int, num_tokens: int, device: torch.device) -> torch.Tensor:
        """A random prefix length of 1..K per image (uniform, as One-D-Piece), from the global RNG: (B,)."""
        return torch.randint(1, num_tokens + 1, (batch,), device=device)

    def forward(self, z_q: torch.Tensor, keep: int | torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, K) codes with tokens from ``keep`` on masked (an int, or one per image); ``None``: a random
        prefix per image in training (``sample``), all tokens in eval."""
        b, _, k = z_q.shape
        if keep is None and not self.training:
            return z_q
        kept = self.sample(b, k, z_q.device) if keep is None else torch.as_tensor(keep, device=z_q.device)
        drop = torch.arange(k, device=z_q.device) >= kept.reshape(-1, 1)  # (B, K)
        return torch.where(drop[:, None, :], self.mask.to(z_q.dtype)[:, None], z_q)

    def complete(self, prefix: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """(B, C, k) codes of a prefix -> (B, C, num_tokens), the tail filled with the mask code."""
        b, c, k = prefix.shape
        return torch.cat([prefix, self.mask.to(prefix.dtype)[None, :, None].expand(b, c, num_tokens - k)], dim=2)


def target_side(kept: int, num_tokens: int, image_size: int, power: float, min_side: int = 1) -> int:
    """DetailFlow's map from a prefix of k = ``kept`` of K = ``num_tokens`` tokens to its target image's side:
    S - (S - 1) ((K - k) / (K - 1)) ** power, rounded down, at least ``min_side``: 1 pixel for the first token, the
    whole image for every token, and with ``power`` > 1 most of the resolution in the first tokens."""
    if num_tokens == 1:
        return image_size
    side = int(image_size - (image_size - 1) * ((num_tokens - kept) / (num_tokens - 1)) ** power)
    return min(image_size, max(min_side, side))


def coarse_targets(x: torch.Tensor, kept: torch.Tensor, num_tokens: int, power: float, min_side: int = 1
                   ) -> torch.Tensor:
    """Each image of ``x`` (B, 3, S, S) degraded to its prefix's ``target_side``: area-averaged down, bilinear back
    up to S, so it stays comparable pixel by pixel with a reconstruction."""
    out, size = x.clone(), x.shape[-1]
    sides = torch.tensor([target_side(int(k), num_tokens, size, power, min_side) for k in kept.tolist()])
    for side in sides.unique().tolist():
        if side == size:
            continue
        rows = (sides == side).nonzero().flatten().to(x.device)
        small = F.interpolate(x[rows], size=(side, side), mode="area")
        out[rows] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).to(x.dtype)
    return out
