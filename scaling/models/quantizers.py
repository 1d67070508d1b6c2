"""Bottlenecks between encoder and decoder: vector quantisers (discrete ids) and continuous ones (KL or plain
normalised tokens). Each returns a ``QuantOut`` with its losses; the discrete ones also their ids."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from scaling.core.config import QuantizerConfig


@dataclass
class QuantOut:
    z_q: torch.Tensor  # the decoder's input: (B, code_dim, H, W) or (B, code_dim, N); quantised straight through
    indices: torch.Tensor | None  # code ids, z_q's shape without the channel dim; None: continuous tokens
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor
    entropy_loss: torch.Tensor  # zero (and not computed) unless asked for
    # l2 distance of each token's encoder output (as the quantiser compares it: normalised for vq) to its code,
    # detached, shaped as ``indices``: how far quantisation moves the latents (``scaling eval``'s histogram);
    # None for continuous tokens
    distance: torch.Tensor | None
    kl_loss: torch.Tensor | None = None  # kl: the weighted KL to N(0, I); zero for the others
    # nested dropout in training: the prefix length each image's decoder saw, (B,); set by the model, None otherwise
    kept: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kl_loss is None:
            self.kl_loss = torch.zeros_like(self.commit_loss)

    @property
    def discrete(self) -> bool:
        return self.indices is not None

    def usage(self, codebook_size: int) -> tuple[float, float]:
        """(share of codes used, perplexity) of this batch's assignments."""
        if self.indices is None:
            raise ValueError("continuous tokens have no codes to count")
        return codebook_stats(self.indices, codebook_size)


def codebook_stats(indices: torch.Tensor, codebook_size: int) -> tuple[float, float]:
    counts = torch.bincount(indices.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).float().mean()), float(entropy.exp())


def bottleneck_stats(outs: list[QuantOut], cfg: QuantizerConfig) -> dict[str, float]:
    """What the bottleneck did over these batches: for codes, the share of the codebook used and the
    perplexity of the assignments (with ``parts``, each part's as ``..._part{p}`` and their means); for continuous
    tokens, the standard deviation of the latents (the scale a generator on them sees) and the mean over channels
    of each channel's variance across tokens."""
    if outs[0].discrete:
        ids = torch.cat([q.indices.flatten() for q in outs])
        per_part = [codebook_stats(d, cfg.codebook_size) for d in part_ids(ids, cfg.codebook_size, cfg.parts)]
        out = {"codebook_usage": sum(u for u, _ in per_part) / cfg.parts,
               "perplexity": sum(p for _, p in per_part) / cfg.parts}
        if cfg.parts > 1:
            out |= {f"{key}_part{p}": stats[i] for p, stats in enumerate(per_part)
                    for i, key in enumerate(("codebook_usage", "perplexity"))}
        return out
    rows = torch.cat([_to_rows(q.z_q.detach()) for q in outs])
    return {"latent_std": float(rows.std()), "latent_channel_var": float(rows.var(0).mean())}


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """``x`` averaged over all ranks when torch.distributed is running (differentiably), else ``x``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x) / dist.get_world_size()


def entropy_loss(sq_dist: torch.Tensor, temperature: float) -> torch.Tensor:
    """GigaTok/MAGVIT entropy penalty: mean per-token entropy minus entropy of the mean assignment.

    Low per-token entropy makes assignments confident; high entropy of the batch-mean spreads use
    over the codebook. The batch is the global one: under torch.distributed the mean assignment is
    averaged over ranks, so each rank spreads use over the codebook jointly with the others.
    """
    logits = -sq_dist / temperature
    probs = logits.softmax(dim=-1)
    log_probs = logits.log_softmax(dim=-1)
    per_token = -(probs * log_probs).sum(-1).mean()
    mean_probs = global_mean(probs.mean(0))
    batch = -(mean_probs * (mean_probs + 1e-10).log()).sum()
    return per_token - batch


def rotate_to(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Rotation trick (Fifty et al. 2024): equals ``q`` in the forward pass; backward, the gradient reaches
    ``z`` through the (constant) rotation and rescaling that maps ``z`` onto ``q``, not straight through.
    Rows of (N, C) tensors."""
    z_norm, q_norm = z.norm(dim=-1, keepdim=True), q.norm(dim=-1, keepdim=True)
    e, q_hat = (z / z_norm.clamp_min(1e-12)).detach(), (q / q_norm.clamp_min(1e-12)).detach()
    r = F.normalize(e + q_hat, dim=-1)  # Householder direction between the two unit vectors
    rotated = z - 2 * r * (r * z).sum(-1, keepdim=True) + 2 * q_hat * (e * z).sum(-1, keepdim=True)
    return (q_norm / z_norm.clamp_min(1e-12)).detach() * rotated


def _to_rows(z: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> (B * prod(spatial), C) in float32."""
    return z.movedim(1, -1).reshape(-1, z.shape[1]).float()


def _token_distance(rows: torch.Tensor, codes: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-token l2 distance of (N, C) rows to their (N, C) codes, shaped as ``like``'s indices."""
    return (rows - codes).detach().norm(dim=-1).view(like.shape[0], *like.shape[2:])


def _from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    b, c, *spatial = like.shape
    return rows.view(b, *spatial, c).movedim(-1, 1).to(like.dtype)


class VectorQuantizer(nn.Module):
    """VQ with l2-normalised codes and inputs (cosine-distance lookup), codebook + commitment losses."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        self.codebook = nn.Embedding(cfg.codebook_size, cfg.code_dim)

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.codebook.weight, -1.0 / self.cfg.codebook_size, 1.0 / self.cfg.codebook_size)

    def _codes(self) -> torch.Tensor:
        codes = self.codebook.weight.float()
        return F.normalize(codes, dim=-1) if self.cfg.l2_norm else codes

    def _assign(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, C) rows -> (rows as quantised, (K, C) codes, (N, K) squared distances to pick codes by)."""
        codes = self._codes()
        if self.cfg.l2_norm:
            flat = F.normalize(flat, dim=-1)
        return flat, codes, sq_distances(flat, codes)

    def forward(self, z: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        """``z``: (B, C, H, W) grids or (B, C, N) token sequences."""
        flat, codes, sq_dist = self._assign(_to_rows(z))
        indices = sq_dist.argmin(1)
        quant = codes[indices]
        codebook_loss = F.mse_loss(quant, flat.detach())
        commit_loss = self.cfg.beta * F.mse_loss(flat, quant.detach())
        ent = entropy_loss(sq_dist, entropy_temperature) if entropy_temperature else flat.new_zeros(())
        distance = _token_distance(flat, quant, z)
        quant = rotate_to(flat, quant) if self.cfg.rotation_trick else flat + (quant - flat).detach()
        return QuantOut(_from_rows(quant, z), indices.view(z.shape[0], *z.shape[2:]), codebook_loss, commit_loss, ent,
                        distance)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for (B, H, W) or (B, N) ids, as (B, C, H, W) or (B, C, N)."""
        return self._codes().to(self.codebook.weight.dtype)[indices].movedim(-1, 1)


class DualCodebookVQ(VectorQuantizer):
    """TokenFlow's dual codebook: inputs are [semantic (``semantic_code_dim``); pixel (``code_dim``)] channels,
    each part l2-normalised against its own codebook, and ONE index per token minimises d_sem + w * d_pix.
    Both lookups use that index, so the output is [semantic code; pixel code] of the same entry."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__(cfg)  # self.codebook: the pixel codebook
        self.semantic_codebook = nn.Embedding(cfg.codebook_size, cfg.semantic_code_dim)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        bound = 1.0 / self.cfg.codebook_size
        nn.init.uniform_(self.semantic_codebook.weight, -bound, bound)

    def _codes(self) -> torch.Tensor:
        parts = (self.semantic_codebook.weight.float(), self.codebook.weight.float())
        return torch.cat([F.normalize(c, dim=-1) if self.cfg.l2_norm else c for c in parts], dim=1)

    def _assign(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        split = [self.cfg.semantic_code_dim, self.cfg.code_dim]
        sem, pix = (F.normalize(t, dim=-1) if self.cfg.l2_norm else t for t in flat.split(split, dim=1))
        code_sem, code_pix = self._codes().split(split, dim=1)
        sq_dist = sq_distances(sem, code_sem) + self.cfg.pixel_distance_weight * sq_distances(pix, code_pix)
        return torch.cat([sem, pix], dim=1), torch.cat([code_sem, code_pix], dim=1), sq_dist


def sq_distances(rows: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(N, C) rows, (K, C) codes -> (N, K) squared l2 distances."""
    return rows.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * rows @ codes.t()


class FixedBottleneck(nn.Module):
    """A bottleneck with nothing to learn: its config is all it has."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg

    def reset_parameters(self) -> None:
        pass


class FSQ(FixedBottleneck):
    """Finite scalar quantisation (Mentzer et al. 2023): each of ``len(levels)`` dimensions is bounded and
    rounded to one of ``levels[i]`` values in [-1, 1]; the code id is the mixed-radix number of the digits.
    No codebook, no codebook or commitment loss."""

    def _grid(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per dimension: levels, the half-range, the offset of even level counts (they have no zero), the
        mixed radix. Made per call (a few numbers), so nothing depends on how the module was built."""
        levels = torch.tensor(self.cfg.levels, device=device)
        radix = torch.tensor([math.prod(self.cfg.levels[:i]) for i in range(len(self.cfg.levels))], device=device)
        return levels, (levels - 1) / 2, (levels % 2 == 0) * 0.5, radix

    def forward(self, z: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        flat = _to_rows(z)
        levels, half, offset, radix = self._grid(z.device)
        span = half * (1 + 1e-3)  # a hair wider, so tanh reaches the outermost values
        bounded = torch.tanh(flat + torch.atanh(offset / span)) * span - offset
        digits = bounded + (bounded.round() - bounded).detach()  # straight-through rounding
        indices = ((digits.detach() + half + offset).round().long() * radix).sum(-1)
        zero = flat.new_zeros(())
        z_q = _from_rows(digits / (levels // 2), z)
        distance = _token_distance(bounded / (levels // 2), digits / (levels // 2), z)
        return QuantOut(z_q, indices.view(z.shape[0], *z.shape[2:]), zero, zero, zero, distance)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        levels, half, offset, radix = self._grid(indices.device)
        digits = (indices[..., None] // radix) % levels
        return ((digits - half - offset) / (levels // 2)).movedim(-1, 1)


class LFQ(FixedBottleneck):
    """Lookup-free quantisation (MAGVIT-v2): each dimension becomes its sign, so the code is a
    ``code_dim``-bit id and the implicit codebook is every +-1 vector. Commitment loss as VQ; the entropy
    loss scores all 2**code_dim codes."""

    def forward(self, z: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        flat = _to_rows(z)
        signs = torch.where(flat > 0, 1.0, -1.0)
        indices = ((flat > 0).long() * 2 ** torch.arange(self.cfg.code_dim, device=z.device)).sum(-1)
        commit = self.cfg.beta * F.mse_loss(flat, signs)
        ent = flat.new_zeros(())
        if entropy_temperature:
            codes = _bit_signs(torch.arange(self.cfg.codebook_size, device=z.device), self.cfg.code_dim)
            sq_dist = flat.pow(2).sum(1, keepdim=True) + self.cfg.code_dim - 2 * flat @ codes.t()
            ent = entropy_loss(sq_dist, entropy_temperature)
        z_q = _from_rows(flat + (signs - flat).detach(), z)
        return QuantOut(z_q, indices.view(z.shape[0], *z.shape[2:]), flat.new_zeros(()), commit, ent,
                        _token_distance(flat, signs, z))

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return _bit_signs(indices, self.cfg.code_dim).movedim(-1, 1)


def _bit_signs(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """Code ids -> their +-1 vectors, bit i of the id giving dimension i: (...,) -> (..., bits)."""
    powers = 2 ** torch.arange(bits, device=indices.device)
    return torch.where((indices[..., None] & powers) > 0, 1.0, -1.0)


class ContinuousBottleneck(FixedBottleneck):
    """Continuous tokens, nothing rounded. ``kl`` (LDM's VAE): the encoder gives a mean and a log-variance per
    channel (``bottleneck_in_dim``: twice ``code_dim``); training samples the latent by reparameterisation,
    evaluation takes the mean, and ``kl_loss`` is ``kl_weight`` times the KL to N(0, I), summed over a token's
    channels and averaged over tokens. ``continuous``: the encoder output, normalised per token over its
    channels (zero mean, unit variance, no affine), so its scale cannot drift and a generator sees
    unit-scale latents."""

    def forward(self, z: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        rows, zero = _to_rows(z), z.new_zeros((), dtype=torch.float32)
        if self.cfg.kind == "continuous":
            latent = F.layer_norm(rows, rows.shape[1:])
            return QuantOut(_from_rows(latent, z), None, zero, zero, zero, None)
        mean, logvar = rows.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)  # LDM's range: exp() stays finite
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()
        latent = mean + (0.5 * logvar).exp() * torch.randn_like(mean) if self.training else mean
        like = z[:, : self.cfg.code_dim]
        return QuantOut(_from_rows(latent, like), None, zero, zero, zero, None, self.cfg.kl_weight * kl)


def bottleneck_in_dim(cfg: QuantizerConfig) -> int:
    """Channels the encoder hands the bottleneck: a mean and a log-variance each for kl, else ``code_dim``."""
    return 2 * cfg.code_dim if cfg.kind == "kl" else cfg.code_dim


def fold_ids(digits: list[torch.Tensor], base: int) -> torch.Tensor:
    """The parts' ids of each token as one id: part p's digit weighs ``base ** p``."""
    return sum(d.long() * base**p for p, d in enumerate(digits))


def part_ids(indices: torch.Tensor, base: int, parts: int) -> list[torch.Tensor]:
    """``fold_ids`` undone: each part's ids."""
    return [(indices // base**p) % base for p in range(parts)]


def _mean_of(outs: list[QuantOut], name: str) -> torch.Tensor:
    return torch.stack([getattr(o, name) for o in outs]).mean()


class ProductQuantizer(nn.Module):
    """ImageFolder's product quantisation: a token's ``code_dim`` channels are cut into ``parts`` equal slices,
    each quantised by its own codebook (with its own entropy loss); the token's id folds the parts' ids
    (``fold_ids``), so a token stays one position of the sequence with ``codebook_size ** parts`` possible ids.
    Losses are the parts' means, so a token's loss weighs as one VQ token's."""

    def __init__(self, cfg: QuantizerConfig, part: Callable[[QuantizerConfig], nn.Module] = VectorQuantizer):
        super().__init__()
        self.cfg = cfg
        sub = replace(cfg, code_dim=cfg.code_dim // cfg.parts, parts=1)
        self.quantizers = nn.ModuleList(part(sub) for _ in range(cfg.parts))

    def reset_parameters(self) -> None:
        for q in self.quantizers:
            q.reset_parameters()

    def forward(self, z: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        outs = [q(chunk, entropy_temperature) for q, chunk in zip(self.quantizers, z.chunk(self.cfg.parts, dim=1))]
        indices = fold_ids([o.indices for o in outs], self.cfg.codebook_size)
        distance = torch.stack([o.distance for o in outs]).square().sum(0).sqrt()  # l2 over the whole token
        return QuantOut(torch.cat([o.z_q for o in outs], dim=1), indices, _mean_of(outs, "codebook_loss"),
                        _mean_of(outs, "commit_loss"), _mean_of(outs, "entropy_loss"), distance)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        digits = part_ids(indices, self.cfg.codebook_size, self.cfg.parts)
        return torch.cat([q.lookup(d) for q, d in zip(self.quantizers, digits)], dim=1)


def resize_grid(x: torch.Tensor, side: int) -> torch.Tensor:
    """A (B, C, h, h) grid at side ``side``: area-averaged down, bilinear up."""
    if x.shape[-1] == side:
        return x
    if side < x.shape[-1]:
        return F.interpolate(x, size=(side, side), mode="area")
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def scale_blocks(scales: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(start, end, side) of each scale's ids in a multi-scale sequence: side x side ids, row-major, coarsest
    first (``MultiScaleQuantizer``'s layout)."""
    ends = itertools.accumulate(s * s for s in scales)
    return [(end - s * s, end, s) for end, s in zip(ends, scales)]


class MultiScaleQuantizer(nn.Module):
    """Multi-scale residual quantisation (VAR; TokenFlow quantises so through its dual codebook): scale by scale,
    coarse to fine, the residual the coarser scales left is area-downsampled to that scale's grid and quantised,
    and its codes, upsampled bilinearly to the latent grid, join the running sum. The sum is the decoder's input
    (straight through to the encoder). Ids are every scale's grid flattened, coarsest first, so a prefix of whole
    scales is a coarser image (``lookup``). Losses are the scales' means."""

    def __init__(self, cfg: QuantizerConfig, level: Callable[[QuantizerConfig], nn.Module]):
        super().__init__()
        self.cfg = cfg
        sub = replace(cfg, scales=())
        self.levels = nn.ModuleList(level(sub) for _ in range(1 if cfg.shared_codebook else len(cfg.scales)))

    def reset_parameters(self) -> None:
        for q in self.levels:
            q.reset_parameters()

    def _level(self, i: int) -> nn.Module:
        return self.levels[0 if self.cfg.shared_codebook else i]

    def forward(self, z: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        """``z``: (B, C, S, S) with S the last scale."""
        side, total, outs = z.shape[-1], torch.zeros_like(z), []
        for i, s in enumerate(self.cfg.scales):
            out = self._level(i)(resize_grid(z - total, s), entropy_temperature)
            total = total + resize_grid(out.z_q.detach(), side)  # the codes' values: z_q is straight through
            outs.append(out)
        indices = torch.cat([o.indices.flatten(1) for o in outs], dim=1)
        distance = torch.cat([o.distance.flatten(1) for o in outs], dim=1)
        return QuantOut(z + (total - z).detach(), indices, _mean_of(outs, "codebook_loss"),
                        _mean_of(outs, "commit_loss"), _mean_of(outs, "entropy_loss"), distance)

    def scale_boundaries(self) -> list[int]:
        """Ids in the first 1, 2, ... scales."""
        return [end for _, end, _ in scale_blocks(self.cfg.scales)]

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, L) ids of the first k scales (L one of ``scale_boundaries``) -> (B, C, S, S): their codes' sum."""
        if indices.shape[1] not in self.scale_boundaries():
            raise ValueError(f"{indices.shape[1]} ids are not whole scales of {list(self.cfg.scales)} "
                             f"(prefixes: {self.scale_boundaries()})")
        side, total = self.cfg.scales[-1], None
        for i, (start, end, s) in enumerate(scale_blocks(self.cfg.scales)):
            if start == indices.shape[1]:
                break
            codes = resize_grid(self._level(i).lookup(indices[:, start:end].unflatten(1, (s, s))), side)
            total = codes if total is None else total + codes
        return total


def build_quantizer(cfg: QuantizerConfig, single: Callable[[QuantizerConfig], nn.Module] | None = None
                    ) -> nn.Module:
    """The bottleneck ``cfg`` describes. ``single``: what quantises one token whole (a family's own VQ, as
    TokenFlow's dual codebook), which product and multi-scale quantisation then compose."""
    kinds = {"vq": VectorQuantizer, "fsq": FSQ, "lfq": LFQ, "kl": ContinuousBottleneck,
             "continuous": ContinuousBottleneck}
    if cfg.kind not in kinds:
        raise ValueError(f"quantizer.kind {cfg.kind!r}")  # validate() rejects it before this
    one = single or kinds[cfg.kind]
    token = (lambda c: ProductQuantizer(c, one)) if cfg.parts > 1 else one
    return MultiScaleQuantizer(cfg, token) if cfg.scales else token(cfg)
