"""Pre-norm Transformer blocks for the hybrid tokenizers.

One ``TransformerBlock`` module per layer, so FSDP can shard block by block. Nothing here creates a
tensor beyond its parameters, so a model builds on the meta device; ``init_weights`` sets the values.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MLP_RATIO = 4  # GigaTok's encoder and decoder blocks
TIME_FEATURES = 256  # sinusoidal features of a flow time before its MLP (DiT's frequency embedding size)


def time_features(t: torch.Tensor, dim: int = TIME_FEATURES) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) cosines and sines at geometric frequencies (t scaled by 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class TimeEmbedding(nn.Module):
    """A flow time as a ``width`` vector: sinusoidal features through a two-layer MLP (DiT's)."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_FEATURES, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(time_features(t).to(self.mlp[0].weight.dtype))

    def init_weights(self) -> None:
        init_linear(self.mlp[0])
        init_linear(self.mlp[2])


def init_linear(module: nn.Linear, std: float = 0.02) -> None:
    nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class Attention(nn.Module):
    """Multi-head attention (SDPA). Self-attention by default; ``cross=True`` reads keys/values from a context."""

    def __init__(self, dim: int, heads: int, cross: bool = False):
        super().__init__()
        self.heads = heads
        if cross:
            self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False,
                cache: dict[str, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``cache`` (self-attention, decoding one position at a time): keys and values of the earlier positions,
        extended in place, so each new position attends to all of them without recomputing them. ``mask``: (L, L)
        booleans, True where a query may attend to a key; given, it replaces ``causal``."""
        if context is None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q, (k, v) = self.q(x), self.kv(context).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                if q.shape[2] != 1:
                    raise ValueError("a cached attention decodes one position at a time")
                causal = False  # the new position sees every cached one
            cache["k"], cache["v"] = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.proj(out.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention to a context (Q-Former), MLP; each pre-norm and residual."""

    def __init__(self, dim: int, heads: int, cross: bool = False, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.cross = cross
        if cross:
            self.norm_q, self.norm_ctx = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.cross_attn = Attention(dim, heads, cross=True)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, MLP_RATIO * dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                cache: dict[str, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal=self.causal, cache=cache, mask=mask)
        if self.cross:
            x = x + self.cross_attn(self.norm_q(x), self.norm_ctx(context))
        return x + self.mlp(self.norm2(x))

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_linear(m)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()


class Transformer(nn.Module):
    """A stack of blocks and a final norm. ``tap=k`` also returns the output of block k (1-based)."""

    def __init__(self, dim: int, layers: int, heads: int, cross: bool = False, causal: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(TransformerBlock(dim, heads, cross, causal) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, tap: int = 0,
                cache: list[dict[str, torch.Tensor]] | None = None, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``cache``: one dict per layer (see ``Attention``), for incremental decoding; ``mask``: its attention
        mask, for every layer."""
        tapped = None
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x, context, mask=mask) if cache is None else layer(x, context, cache=cache[i - 1])
            if i == tap:
                tapped = x
        return self.norm(x), tapped

    def init_weights(self) -> None:
        for layer in self.layers:
            layer.init_weights()
        self.norm.reset_parameters()
