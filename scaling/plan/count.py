"""Parameters and FLOPs of a config's tokenizer, counted on the meta device (nothing is allocated)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from scaling.core.config import Config
from scaling.models.factory import build_tokenizer, parameter_counts


@dataclass
class Plan:
    params: dict[str, int]  # params_total, params_encoder, params_decoder, params_<component>
    flops_forward: int  # per image
    flops_per_image: int  # forward + backward
    model: nn.Module  # on the meta device


def meta_model(cfg: Config) -> nn.Module:
    with torch.device("meta"):
        return build_tokenizer(cfg)


def training_flops(model: nn.Module, cfg: Config) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of one training image through the tokenizer alone: matmuls,
    convolutions and attention as FlopCounterMode counts them; no LPIPS, discriminator or teacher."""
    x = torch.empty(1, 3, cfg.data.image_size, cfg.data.image_size, device="meta")
    temperature = cfg.loss.entropy_temperature if cfg.loss.entropy_weight else None
    semantic = cfg.loss.semantic_weight > 0
    with FlopCounterMode(display=False) as forward:
        recon, q, *student = model(x, temperature, semantic=True) if semantic else model(x, temperature)
        loss = recon.float().mean() + q.codebook_loss + q.commit_loss + q.entropy_loss
        if student:
            loss = loss + student[0].float().mean()
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    return forward.get_total_flops(), forward.get_total_flops() + backward.get_total_flops()


def plan(cfg: Config) -> Plan:
    model = meta_model(cfg)
    fwd, both = training_flops(model, cfg)
    return Plan(parameter_counts(model), fwd, both, model)
