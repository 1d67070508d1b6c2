"""GigaTok's hybrid tokenizer: CNN -> Transformer -> VQ -> Transformer -> CNN.

Layout ``1d``: a Q-Former turns the CNN grid into ``num_tokens`` 1D tokens (learnable queries, initialised
from multi-level average pools of the grid, coarse to fine, optionally causal among themselves); the
decoder's 2D queries cross-attend to the tokens. The 2D queries start from the adjoint of that pooling (our
choice; GigaTok does not say), so spatial layout reaches the decoder before attention has learnt it: the
tiny config needs about 40% fewer steps to a given reconstruction loss. Layout ``2d``: ViT blocks on the
grid on both sides.
The CNN decoder's GroupNorms are conditioned on the quantised tokens and it upsamples by depth-to-space.

Everything builds on the meta device; ``init_weights`` (called by the constructor) sets the values and
can be called again after ``to_empty``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.core.config import Config, ModelConfig, QuantizerConfig
from scaling.models.family import (Family, Sizes, always, encoder_decoder_summary, nested_summary,
                                   quantizer_summary)
from scaling.models.nested import NestedDropout
from scaling.models.quantizers import QuantOut, bottleneck_in_dim, build_quantizer
from scaling.models.transformer import Transformer, TransformerBlock, init_linear
from scaling.models.vqgan import Encoder, ResBlock

# GigaTok's Transformer sizes: name -> (width, layers, heads). "tiny" is for CPU tests.
TRANSFORMER_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 2), "S": (512, 6, 8), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1280, 36, 20),
    "XXL": (1536, 48, 24),
}


def pool_levels(grid: int) -> list[int]:
    """Pooling sizes 1, 2, 4, ... and finally ``grid`` itself."""
    sizes = [1]
    while sizes[-1] * 2 < grid:
        sizes.append(sizes[-1] * 2)
    return sizes + [grid] if grid > 1 else sizes


def multilevel_pool(x: torch.Tensor, grid: int, n: int) -> torch.Tensor:
    """The first ``n`` average pools of a (B, grid*grid, C) map, coarse to fine: the global mean first."""
    img = x.transpose(1, 2).unflatten(2, (grid, grid))
    pools, total = [], 0
    for size in pool_levels(grid):
        if total >= n:
            break
        pools.append(F.adaptive_avg_pool2d(img, size).flatten(2))
        total += size * size
    return torch.cat(pools, dim=2)[:, :, :n].transpose(1, 2)


def multilevel_unpool(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """The adjoint of ``multilevel_pool``: every cell of a (B, grid*grid, C) map gets the mean of the tokens
    whose pooling regions cover it, so the global token reaches every cell and finer ones their region."""
    b, n, c = tokens.shape
    out, start, levels = tokens.new_zeros(b, c, grid, grid), 0, 0
    for size in pool_levels(grid):
        if start >= n:
            break
        level = tokens[:, start:start + size * size].transpose(1, 2)
        level = F.pad(level, (0, size * size - level.shape[2]))  # the last level may be partial
        out = out + F.interpolate(level.unflatten(2, (size, size)), size=(grid, grid), mode="nearest")
        start, levels = start + size * size, levels + 1
    return (out / levels).flatten(2).transpose(1, 2)


class TokenTransformer(nn.Module):
    """(B, num_inputs, dim) tokens -> Transformer of a TRANSFORMER_SIZES size -> (B, num_outputs, dim).

    With ``num_queries`` it is a Q-Former: learnable queries self-attend and cross-attend to the projected
    inputs and become the output. ``pool_grid`` adds multi-level pools of the input grid to them (the
    encoder); ``unpool_grid`` adds the input tokens spread back over the query grid (the decoder).
    With ``joint`` the queries instead join the inputs in one self-attention sequence (TiTok's latent and
    mask tokens) and their outputs are the output. Without queries, ViT blocks run on the inputs themselves.
    ``out_dim`` (default ``dim``) is the output width; ``sizes`` the table ``size`` is looked up in.
    ``query_dim`` (joint only) adds per-query inputs, projected, to the queries, and ``forward``'s ``query_cond``
    one vector per image (a flow decoder's noisy patches and time).
    """

    def __init__(self, size: str, dim: int, num_inputs: int, num_queries: int = 0, causal: bool = False,
                 pool_grid: int = 0, unpool_grid: int = 0, joint: bool = False, out_dim: int = 0,
                 sizes: Sizes = TRANSFORMER_SIZES, query_dim: int = 0):
        super().__init__()
        self.width, layers, heads = sizes[size]
        self.pool_grid, self.unpool_grid, self.joint = pool_grid, unpool_grid, joint
        self.in_proj = nn.Linear(dim, self.width)
        self.pos = nn.Parameter(torch.empty(1, num_inputs, self.width))
        self.queries = nn.Parameter(torch.empty(1, num_queries, self.width)) if num_queries else None
        self.query_proj = nn.Linear(query_dim, self.width) if query_dim else None
        cross = bool(num_queries) and not joint
        self.transformer = Transformer(self.width, layers, heads, cross=cross, causal=causal)
        self.out_proj = nn.Linear(self.width, out_dim or dim)

    def forward(self, x: torch.Tensor, tap: int = 0, query_inputs: torch.Tensor | None = None,
                query_cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output tokens, and the hidden states after block ``tap`` (1-based; 0: none)."""
        x = self.in_proj(x) + self.pos
        if self.queries is None:
            h, tapped = self.transformer(x, tap=tap)
        elif self.joint:
            queries = self.queries.expand(len(x), -1, -1)
            if self.query_proj is not None:
                queries = queries + self.query_proj(query_inputs) + query_cond[:, None]
            h, tapped = self.transformer(torch.cat([x, queries], dim=1), tap=tap)
            h = h[:, x.shape[1]:]
        else:
            queries = self.queries.expand(len(x), -1, -1)
            if self.pool_grid:
                queries = queries + multilevel_pool(x, self.pool_grid, queries.shape[1])
            if self.unpool_grid:
                queries = queries + multilevel_unpool(x, self.unpool_grid)
            h, tapped = self.transformer(queries, context=x, tap=tap)
        return self.out_proj(h), tapped

    def init_weights(self) -> None:
        # Projections keep PyTorch's fan-in init: from the narrow CNN/code widths a 0.02 init would leave
        # the image content ten times weaker than the position embeddings.
        for linear in (self.in_proj, self.out_proj, self.query_proj):
            if linear is not None:
                linear.reset_parameters()
        for p in (self.pos, self.queries):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        self.transformer.init_weights()


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm whose per-channel scale and shift are predicted from token statistics (std -> scale,
    mean -> shift), so every decoder level sees the image's global code statistics. The projections start
    at zero: at initialisation it is a plain GroupNorm."""

    def __init__(self, groups: int, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=False)
        self.scale, self.shift = nn.Linear(cond_dim, channels), nn.Linear(cond_dim, channels)

    def forward(self, x: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mean, std = cond
        return self.norm(x) * (1 + self.scale(std)[..., None, None]) + self.shift(mean)[..., None, None]

    def init_weights(self) -> None:
        for lin in (self.scale, self.shift):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)


class DepthToSpaceUpsample(nn.Module):
    """2x upsampling: a 3x3 conv to 4x the channels, then pixel shuffle."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, 4 * ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)

    @torch.no_grad()
    def init_weights(self) -> None:
        # ICNR: the four sub-pixel filters of a channel start equal, so the layer starts as nearest-neighbour
        # upsampling of a conv and shows no checkerboard.
        self.conv.reset_parameters()
        self.conv.weight.copy_(self.conv.weight[::4].repeat_interleave(4, dim=0))
        self.conv.bias.copy_(self.conv.bias[::4].repeat_interleave(4))


class DecoderLevel(nn.Module):
    def __init__(self, cin: int, cout: int, cfg: ModelConfig, upsample: bool):
        super().__init__()
        self.norm = AdaptiveGroupNorm(cfg.norm_groups, cin, cfg.z_channels)
        chans = [cin] + [cout] * (cfg.num_res_blocks + 1)
        self.blocks = nn.Sequential(*(ResBlock(a, b, cfg.dropout, cfg.norm_groups) for a, b in zip(chans, chans[1:])))
        self.up = DepthToSpaceUpsample(cout) if upsample else nn.Identity()

    def forward(self, x: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.up(self.blocks(self.norm(x, cond)))


class AdaptiveCNNDecoder(nn.Module):
    """The LlamaGen decoder's layout (no attention) with an adaptive GroupNorm opening every level and
    before the output, and depth-to-space upsampling."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch, mults = cfg.base_channels, cfg.channel_mult
        cin = ch * mults[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = nn.Sequential(*(ResBlock(cin, cin, cfg.dropout, cfg.norm_groups) for _ in range(2)))
        levels = []
        for level, mult in reversed(list(enumerate(mults))):
            levels.append(DecoderLevel(cin, ch * mult, cfg, upsample=level > 0))
            cin = ch * mult
        self.levels = nn.ModuleList(levels)
        self.norm_out = AdaptiveGroupNorm(cfg.norm_groups, cin, cfg.z_channels)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, h: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        h = self.mid(self.conv_in(h))
        for level in self.levels:
            h = level(h, cond)
        return self.conv_out(F.silu(self.norm_out(h, cond)))

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.GroupNorm, nn.Linear)):
                m.reset_parameters()  # PyTorch defaults, as the vqgan CNN
        for m in self.modules():
            if isinstance(m, (AdaptiveGroupNorm, DepthToSpaceUpsample)):
                m.init_weights()


class SemanticHead(nn.Sequential):
    """Decoder features -> the teacher's feature space: width -> 4w -> 4w -> out, SiLU (GigaTok). ``in_dim``: the
    input's width when it is not ``width`` (a part of the quantised tokens, ImageFolder)."""

    def __init__(self, width: int, out: int, in_dim: int = 0):
        super().__init__(nn.Linear(in_dim or width, 4 * width), nn.SiLU(), nn.Linear(4 * width, 4 * width),
                         nn.SiLU(), nn.Linear(4 * width, out))

    def init_weights(self) -> None:
        for m in self:
            if isinstance(m, nn.Linear):
                init_linear(m)


def token_stats(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over the tokens of each image: (B, N, C) -> 2 x (B, C)."""
    t = tokens.float()
    return t.mean(1), (t.var(1, unbiased=False) + 1e-6).sqrt()


class GigaTok(nn.Module):
    """Image -> (B, num_tokens) ids (layout 1d) or (B, g, g) ids (layout 2d) -> image.

    ``semantic_dim > 0`` adds the semantic-regularisation MLP on the output of decoder block
    ``semantic_layer`` or, with ``quantizer.semantic_part``, on that part of the quantised tokens (ImageFolder);
    ``forward(..., semantic=True)`` then also returns its per-token predictions.
    ``model.nested_dropout`` (layout 1d) trains on random token prefixes; ``decode(z_q, keep=k)`` and
    ``decode_indices`` of a (B, k) prefix decode the first k tokens.
    """

    unit_types: ClassVar[tuple[type[nn.Module], ...]] = (TransformerBlock, ResBlock)  # FSDP units

    def __init__(self, model: ModelConfig, quantizer: QuantizerConfig, image_size: int, semantic_dim: int = 0,
                 semantic_layer: int = 3):
        super().__init__()
        self.grid = grid = image_size // model.downsample
        self.one_d = model.layout == "1d"
        self.num_tokens = n = model.num_tokens if self.one_d else grid * grid
        z = model.z_channels
        self.encoder_cnn = Encoder(model)
        self.encoder_transformer = TokenTransformer(
            model.encoder_size, z, grid * grid, num_queries=n if self.one_d else 0, causal=model.causal,
            pool_grid=grid if self.one_d else 0)
        self.quant_proj = nn.Linear(z, bottleneck_in_dim(quantizer))
        self.quantizer = build_quantizer(quantizer)
        self.nested = NestedDropout(quantizer.code_dim) if model.nested_dropout else None
        self.post_quant_proj = nn.Linear(quantizer.code_dim, z)
        self.decoder_transformer = TokenTransformer(
            model.decoder_size, z, n, num_queries=grid * grid if self.one_d else 0,
            unpool_grid=grid if self.one_d else 0)
        self.decoder_cnn = AdaptiveCNNDecoder(model)
        self.semantic_layer = semantic_layer
        self.parts, self.semantic_part = quantizer.parts, quantizer.semantic_part
        in_dim = quantizer.code_dim // quantizer.parts if self.semantic_part >= 0 else 0
        self.semantic_head = SemanticHead(self.decoder_transformer.width, semantic_dim, in_dim) if semantic_dim \
            else None
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.encoder_cnn.modules():
            if isinstance(m, (nn.Conv2d, nn.GroupNorm)):
                m.reset_parameters()
        for m in (self.encoder_transformer, self.decoder_transformer, self.decoder_cnn, self.semantic_head):
            if m is not None:
                m.init_weights()
        self.quant_proj.reset_parameters()
        self.post_quant_proj.reset_parameters()
        self.quantizer.reset_parameters()
        if self.nested is not None:
            self.nested.reset_parameters()

    def components(self) -> dict[str, list[nn.Module]]:
        """Parameter groups for counting, in the order data flows through them."""
        return {"encoder_cnn": [self.encoder_cnn], "encoder_transformer": [self.encoder_transformer],
                "quantizer": [m for m in (self.quant_proj, self.quantizer, self.nested, self.post_quant_proj)
                              if m is not None],
                "decoder_transformer": [self.decoder_transformer], "decoder_cnn": [self.decoder_cnn],
                "semantic_mlp": [self.semantic_head] if self.semantic_head is not None else []}

    def encode(self, x: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        tokens, _ = self.encoder_transformer(self.encoder_cnn(x).flatten(2).transpose(1, 2))
        z = self.quant_proj(tokens).transpose(1, 2)  # (B, channels, N): code_dim, or twice it for kl
        if not self.one_d:
            z = z.unflatten(2, (self.grid, self.grid))
        return self.quantizer(z, entropy_temperature)

    def _decode(self, z_q: torch.Tensor, tap: int = 0, keep: int | torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.nested is not None:
            z_q = self.nested(z_q, keep)
        tokens = self.post_quant_proj(z_q.flatten(2).transpose(1, 2))  # (B, N, z_channels)
        h, tapped = self.decoder_transformer(tokens, tap)
        h = h.transpose(1, 2).unflatten(2, (self.grid, self.grid))
        return self.decoder_cnn(h, token_stats(tokens)), tapped

    def decode(self, z_q: torch.Tensor, keep: int | torch.Tensor | None = None) -> torch.Tensor:
        """Image from quantised tokens; ``keep``: the first ``keep`` tokens only (nested dropout)."""
        return self._decode(z_q, keep=keep)[0]

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Image from ids; with nested dropout, (B, k) ids of a prefix decode too."""
        z_q = self.quantizer.lookup(indices)
        return self.decode(z_q if self.nested is None else self.nested.complete(z_q, self.num_tokens))

    def forward(self, x: torch.Tensor, entropy_temperature: float | None = None,
                semantic: bool = False) -> tuple[torch.Tensor, ...]:
        """(recon, QuantOut); with ``semantic``, also the semantic MLP's (B, g*g, semantic_dim) predictions. With
        nested dropout in training, ``QuantOut.kept`` is each image's prefix."""
        q = self.encode(x, entropy_temperature)
        if self.nested is not None and self.training:
            q.kept = self.nested.sample(len(x), self.num_tokens, x.device)
        if not semantic:
            return self.decode(q.z_q, keep=q.kept), q
        if self.semantic_head is None:
            raise ValueError("semantic=True needs a model built with semantic_dim > 0")
        if self.semantic_part >= 0:
            part = q.z_q.chunk(self.parts, dim=1)[self.semantic_part]
            return self.decode(q.z_q, keep=q.kept), q, self.semantic_head(part.flatten(2).transpose(1, 2))
        recon, hidden = self._decode(q.z_q, tap=self.semantic_layer, keep=q.kept)
        return recon, q, self.semantic_head(hidden)


def build(cfg: Config) -> GigaTok:
    from scaling.models.backbones import teacher_width

    semantic_dim = teacher_width(cfg.loss.semantic_teacher) if cfg.loss.semantic_weight else 0
    return GigaTok(cfg.model, cfg.quantizer, cfg.data.image_size, semantic_dim, cfg.loss.semantic_layer)


def check(cfg: Config) -> list[str]:
    m, lc, errs = cfg.model, cfg.loss, []
    grid = cfg.data.image_size // m.downsample
    if m.layout == "1d" and m.num_tokens > grid * grid:
        errs.append(f"model.num_tokens: {m.num_tokens} is more than the {grid}x{grid} CNN grid it summarises")
    if cfg.quantizer.semantic_part >= 0 and m.layout == "1d" and math.isqrt(m.num_tokens) ** 2 != m.num_tokens:
        errs.append(f"quantizer.semantic_part: its tokens are resampled to the teacher's patch grid, so "
                    f"model.num_tokens must be a square, got {m.num_tokens}")
    if m.decoder_size in TRANSFORMER_SIZES and lc.semantic_weight and cfg.quantizer.semantic_part < 0:
        layers = TRANSFORMER_SIZES[m.decoder_size][1]
        if lc.semantic_layer > layers:
            errs.append(f"loss.semantic_layer: {lc.semantic_layer} is beyond the {layers} layers of "
                        f"model.decoder_size {m.decoder_size!r}")
    return errs


def describe(cfg: Config) -> str:
    m = cfg.model
    tokens = f"{m.num_tokens} 1D tokens{' (causal)' if m.causal else ''}" if m.layout == "1d" else "2D tokens"
    return (f"gigatok {m.layout}, {encoder_decoder_summary(TRANSFORMER_SIZES, cfg)}, {tokens}{nested_summary(m)}, "
            f"{quantizer_summary(cfg.quantizer)}")


def _one_d(cfg: Config) -> bool:
    return cfg.model.layout == "1d"


def _two_d(cfg: Config) -> bool:
    return cfg.model.layout == "2d"


FAMILY = Family(name="gigatok", build=build, describe=describe, sizes=TRANSFORMER_SIZES, check=check,
                options={"model.causal": _one_d, "model.nested_dropout": _one_d, "loss.semantic_weight": always,
                         "quantizer.scales": _two_d, "quantizer.parts": always, "quantizer.semantic_part": always})
