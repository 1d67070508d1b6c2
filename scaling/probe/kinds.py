"""The generation probes a run can ask for (``probe.kinds``), each as the shared probe machinery sees it.

``ar``: the class-conditional GPT over code ids (``scaling.probe.gpt``), scored by its next-token loss (or, with
``probe.order = "scale"``, its next-scale loss: VAR's prediction of each scale from the coarser ones).
``flow``: the rectified-flow Transformer over continuous latents (``scaling.probe.flow``): a continuous
tokenizer's own tokens, or the code vectors a discrete one decodes; trained on latents scaled to zero mean and
unit variance per channel (``meta["norm"]``), its samples scaled back and, for a discrete tokenizer, snapped to
the nearest code by the tokenizer's own quantiser before decoding.

The caching, training loop, checkpoints, signals, linear probe and gFID are the same for both
(``scaling.probe.trainer``, ``scaling.probe.run``); a kind supplies only what differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from scaling.core.config import Config
from scaling.core.config.schema import DISCRETE_KINDS
from scaling.probe import flow, gpt


@dataclass(frozen=True)
class ProbeKind:
    name: str  # its probe.kinds value
    prefix: str  # its MLflow metrics are PREFIX/..., its provenance tags provenance/PREFIX/...
    latents: bool  # its token cache holds continuous latents, not code ids
    val_key: str  # its validation loss's metric
    build: Callable[[Config, dict[str, Any]], nn.Module]  # on the current default device
    inputs: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]  # cached rows -> what the model takes
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # a training batch's loss
    # per-image validation loss of (inputs, labels, image indices): deterministic, whoever computes it
    val_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, Config], torch.Tensor]
    # images (B, 3, H, W) in [-1, 1] for labels at a guidance scale, decoded by the tokenizer
    sample: Callable[[nn.Module, nn.Module, torch.Tensor, float, Config, dict[str, Any], torch.Generator],
                     torch.Tensor]
    flops: Callable[[Config, dict[str, Any]], int]  # forward + backward FLOPs of one training sequence
    how: Callable[[Config], dict[str, str]]  # how it samples, for the provenance tags
    keys: tuple[str, ...]  # the probe.* keys only this kind reads


# --- ar ---------------------------------------------------------------------------------------------------------

def _ar_build(cfg: Config, meta: dict[str, Any]) -> nn.Module:
    p = cfg.probe
    return gpt.ClassConditionalGPT(p.size, cfg.quantizer.codebook_size, meta["num_classes"], meta["seq_len"],
                                   p.dropout, cfg.quantizer.parts, _ar_scales(cfg))


def _ar_scales(cfg: Config) -> tuple[int, ...]:
    """The scales the GPT predicts one after another; none: token by token."""
    return tuple(cfg.quantizer.scales) if cfg.probe.order == "scale" else ()


def _ar_loss(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return gpt.token_nll(model(tokens, labels), tokens).mean()


def _ar_val_loss(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                 cfg: Config) -> torch.Tensor:
    """Cross-entropy in nats per token (of each token given the tokens or scales before it), per image, of the
    true-class model."""
    return gpt.token_nll(model(tokens, labels), tokens).mean(1)


def _ar_sample(model: nn.Module, tokenizer: nn.Module, labels: torch.Tensor, scale: float, cfg: Config,
               meta: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    p = cfg.probe
    tokens = model.generate(labels, scale, p.temperature, p.top_k, generator)
    return tokenizer.decode_indices(tokens.view(len(labels), *meta["grid"]))


def _ar_flops(cfg: Config, meta: dict[str, Any]) -> int:
    return gpt.sequence_flops(cfg.probe.size, cfg.quantizer.codebook_size, meta["num_classes"], meta["seq_len"],
                              cfg.quantizer.parts, _ar_scales(cfg))


def _ar_how(cfg: Config) -> dict[str, str]:
    return {"temperature": f"{cfg.probe.temperature:g}", "top_k": str(cfg.probe.top_k)}


# --- flow -------------------------------------------------------------------------------------------------------

def _flow_build(cfg: Config, meta: dict[str, Any]) -> nn.Module:
    p = cfg.probe
    return flow.FlowTransformer(p.size, meta["channels"], meta["num_classes"], meta["seq_len"], p.dropout)


def _flow_inputs(rows: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """(B, L * C) cached latents -> (B, L, C), scaled per channel to zero mean and unit variance."""
    mean, std = (torch.tensor(v, device=rows.device) for v in meta["norm"])
    return (rows.view(len(rows), meta["seq_len"], meta["channels"]) - mean) / std


def _flow_loss(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return flow.flow_loss(model, x0, labels)


def _flow_val_loss(model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                   cfg: Config) -> torch.Tensor:
    """The flow loss per image, averaged over ``flow.VAL_TIMES``, with noise seeded by the image's index."""
    noise = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(cfg.train.seed + int(i)))
                         for i in index]).to(x0.device)
    per_time = [flow.flow_loss(model, x0, labels, torch.full((len(x0),), t, device=x0.device), noise, "none")
                for t in flow.VAL_TIMES]
    return torch.stack(per_time).mean(0)


def _flow_sample(model: nn.Module, tokenizer: nn.Module, labels: torch.Tensor, scale: float, cfg: Config,
                 meta: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    p = cfg.probe
    x = model.generate(labels, p.sample_steps, scale, p.sampler, generator)
    mean, std = (torch.tensor(v, device=x.device) for v in meta["norm"])
    z = (x.float() * std + mean).transpose(1, 2).unflatten(2, tuple(meta["grid"]))  # (B, C, *grid)
    if cfg.quantizer.kind in DISCRETE_KINDS:  # the decoder knows only codes: the nearest, as its quantiser picks
        z = tokenizer.quantizer(z).z_q
    return tokenizer.decode(z.to(next(tokenizer.parameters()).dtype))


def _flow_flops(cfg: Config, meta: dict[str, Any]) -> int:
    return flow.sequence_flops(cfg.probe.size, meta["channels"], meta["num_classes"], meta["seq_len"])


def _flow_how(cfg: Config) -> dict[str, str]:
    return {"sample_steps": str(cfg.probe.sample_steps), "sampler": cfg.probe.sampler}


KINDS: dict[str, ProbeKind] = {
    "ar": ProbeKind("ar", "probe", False, "probe/ar_val_loss", _ar_build, lambda rows, meta: rows, _ar_loss,
                    _ar_val_loss, _ar_sample, _ar_flops, _ar_how, ("temperature", "top_k", "order")),
    "flow": ProbeKind("flow", "flow", True, "flow/val_loss", _flow_build, _flow_inputs, _flow_loss, _flow_val_loss,
                      _flow_sample, _flow_flops, _flow_how, ("sample_steps", "sampler")),
}
