"""The flow probe's model: a class-conditional Transformer over a tokenizer's continuous latents, trained with
rectified flow (SiT's linear path and velocity target) and sampled with an ODE solver.

With data x0 and noise e, x_t = (1 - t) x0 + t e and the network predicts v = e - x0; sampling integrates
dx/dt = v from t = 1 (noise) to t = 0 (data), Euler or Heun, with classifier-free guidance mixing the
conditional and unconditional velocities. The time and the class enter as two tokens in front of the latents
(DiT's in-context conditioning), so the blocks are the project's pre-norm Transformer blocks and the probe is
sharded, checkpointed and compiled by the same ``parallelize`` code as the tokenizers and the AR probe. The
output layer starts at zero: the untrained model predicts no motion.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from scaling.core.config.schema import PROBE_SIZES
from scaling.models.transformer import TimeEmbedding, Transformer, TransformerBlock, init_linear

PREFIX = 2  # the time and class tokens in front of the latents
# Fixed times of the validation loss: the midpoints of four equal steps of the path, so that the loss weighs
# every noise level alike and depends on nothing random but the (seeded) noise.
VAL_TIMES = (0.125, 0.375, 0.625, 0.875)


class FlowTransformer(nn.Module):
    unit_types: ClassVar[tuple[type[nn.Module], ...]] = (TransformerBlock,)  # FSDP units

    def __init__(self, size: str, channels: int, num_classes: int, seq_len: int, dropout: float = 0.0):
        super().__init__()
        dim, layers, heads = PROBE_SIZES[size]
        self.channels, self.num_classes, self.seq_len, self.depth = channels, num_classes, seq_len, layers
        self.in_proj = nn.Linear(channels, dim)
        self.time_emb = TimeEmbedding(dim)
        self.cls_emb = nn.Embedding(num_classes + 1, dim)  # the last id: no class (CFG)
        self.pos_emb = nn.Parameter(torch.empty(1, PREFIX + seq_len, dim))
        self.drop = nn.Dropout(dropout)
        self.transformer = Transformer(dim, layers, heads, causal=False)
        self.head = nn.Linear(dim, channels)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def init_weights(self) -> None:
        nn.init.normal_(self.cls_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)
        init_linear(self.in_proj)
        self.time_emb.init_weights()
        self.transformer.init_weights()
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _inputs(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        prefix = torch.stack([self.time_emb(t), self.cls_emb(labels)], dim=1)
        return self.drop(torch.cat([prefix, self.in_proj(x)], dim=1) + self.pos_emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Velocity (B, L, C) at latents ``x`` (B, L, C), times ``t`` (B,), classes ``labels`` (B,)."""
        return self._velocity_of(x, t, labels)

    def _velocity_of(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # forward's body, for ``generate`` to call: under FSDP, entering forward again from inside another
        # registered entry point would reshard the root's parameters halfway through
        h, _ = self.transformer(self._inputs(x, t, labels))
        return self.head(h[:, PREFIX:])

    def features(self, x0: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Mean-pooled hidden states of block ``layer`` (default: the middle one) over the clean latents (t = 0),
        read without the label."""
        t = torch.zeros(x0.shape[0], device=x0.device)
        labels = torch.full((x0.shape[0],), self.null_class, device=x0.device)
        _, tapped = self.transformer(self._inputs(x0, t, labels), tap=layer or max(1, self.depth // 2))
        return tapped[:, PREFIX:].mean(1)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, steps: int, cfg_scale: float = 1.0, sampler: str = "euler",
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents (B, L, C) for ``labels``: noise integrated from t = 1 to 0 in ``steps`` equal steps."""
        x = torch.randn((len(labels), self.seq_len, self.channels), generator=generator, device=labels.device)
        times = torch.linspace(1.0, 0.0, steps + 1, device=labels.device)
        for t, t_next in zip(times[:-1], times[1:]):
            v = self._velocity(x, t, labels, cfg_scale)
            if sampler == "heun" and t_next > 0:  # the trapezoid of the two ends' velocities
                v = 0.5 * (v + self._velocity(x + (t_next - t) * v, t_next, labels, cfg_scale))
            x = x + (t_next - t) * v
        return x

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        """Guided velocity: uncond + scale * (cond - uncond), one batched call for both."""
        times = t.expand(len(x))
        if cfg_scale == 1.0:
            return self._velocity_of(x, times, labels).float()
        null = torch.full_like(labels, self.null_class)
        both = self._velocity_of(torch.cat([x, x]), torch.cat([times, times]), torch.cat([labels, null]))
        cond, uncond = both.float().chunk(2)
        return uncond + cfg_scale * (cond - uncond)


def flow_loss(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, t: torch.Tensor | None = None,
              noise: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Rectified-flow loss: the squared error of the predicted velocity against e - x0 at x_t, averaged over
    latent elements (``reduction='none'``: per image). ``t`` and ``noise`` default to uniform times and
    Gaussian noise from the global RNG (checkpointed, so a resumed training draws what it would have)."""
    t = torch.rand(len(x0), device=x0.device) if t is None else t
    noise = torch.randn_like(x0) if noise is None else noise
    x_t = (1 - t)[:, None, None] * x0 + t[:, None, None] * noise
    err = (model(x_t, t, labels).float() - (noise - x0).float()).square()
    return err.mean() if reduction == "mean" else err.flatten(1).mean(1)


def sequence_flops(size: str, channels: int, num_classes: int, seq_len: int) -> int:
    """Forward + backward FLOPs of one training sequence through the flow probe (its loss included), counted on
    the meta device as ``scaling plan`` counts a tokenizer's."""
    with torch.device("meta"):
        model = FlowTransformer(size, channels, num_classes, seq_len)
        x0, labels = torch.zeros(1, seq_len, channels), torch.zeros(1, dtype=torch.long)
        t, noise = torch.zeros(1), torch.zeros(1, seq_len, channels)
    with FlopCounterMode(display=False) as counter:
        flow_loss(model, x0, labels, t, noise).backward()
    return counter.get_total_flops()


def latent_norm(latents: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of (N, L * C) cached latents: the flow probe trains on latents
    scaled to zero mean and unit variance per channel, and samples are scaled back before decoding."""
    rows = latents.view(-1, channels).double()
    return rows.mean(0).float(), rows.std(0).clamp_min(1e-6).float()

