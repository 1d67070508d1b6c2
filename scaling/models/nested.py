"""Nested dropout of 1D tokens (FlexTok, One-D-Piece): ordered tokens, any prefix decodes.

In training every image keeps a random prefix of its K quantised tokens; the tail is replaced by one learned
mask code before the decoder. The decoder learns to decode any prefix, and the encoder learns to put the
coarse content into the first tokens. At evaluation ``keep`` chooses the prefix; ids of a prefix
(``complete``) are padded with the mask code.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class NestedDropout(nn.Module):
    def __init__(self, code_dim: int):
        super().__init__()
        self.mask = nn.Parameter(torch.empty(code_dim))

    def reset_parameters(self) -> None:
        # Near zero: far from every (unit-norm) code, so the decoder can tell a masked token from a kept one.
        nn.init.trunc_normal_(self.mask, std=0.02, a=-0.04, b=0.04)

    def forward(self, z_q: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """(B, C, K) codes with tokens from ``keep`` on masked; ``None``: a random prefix of 1..K per image in
        training (uniform, as One-D-Piece), all tokens in eval."""
        b, _, k = z_q.shape
        if keep is None and not self.training:
            return z_q
        kept = (torch.randint(1, k + 1, (b, 1), device=z_q.device) if keep is None
                else torch.full((b, 1), keep, device=z_q.device))
        drop = torch.arange(k, device=z_q.device) >= kept  # (B, K)
        return torch.where(drop[:, None, :], self.mask.to(z_q.dtype)[:, None], z_q)

    def complete(self, prefix: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """(B, C, k) codes of a prefix -> (B, C, num_tokens), the tail filled with the mask code."""
        b, c, k = prefix.shape
        return torch.cat([prefix, self.mask.to(prefix.dtype)[None, :, None].expand(b, c, num_tokens - k)], dim=2)
