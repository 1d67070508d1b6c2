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
    flops_forward: int  # per image, the tokenizer
    flops_per_image: int  # forward + backward, the tokenizer
    model: nn.Module  # on the meta device
    flops_by_part: dict[str, int]  # per training image: the tokenizer and each loss network that is on

    @property
    def flops_per_training_image(self) -> int:
        """What one image costs a training step once every part is on (the discriminator after gan_start)."""
        return sum(self.flops_by_part.values())


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
        loss = recon.float().mean() + q.codebook_loss + q.commit_loss + q.entropy_loss + q.kl_loss
        if student:
            loss = loss + student[0].float().mean()
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    return forward.get_total_flops(), forward.get_total_flops() + backward.get_total_flops()


def step_flops(cfg: Config, tokenizer: int | None = None) -> dict[str, int]:
    """FLOPs one training image costs, by part, counted on the meta device: ``tokenizer`` (forward and backward,
    as ``training_flops``), and where they are on ``lpips`` (forward on the reconstruction and the image, backward
    to the reconstruction), ``teacher`` (its forward on the resized image), ``discriminator`` (its generator
    loss, forward and backward, and its own step on a real and a reconstructed image; from ``loss.gan_start``).
    Checkpointing's recomputation is not counted (the MFU convention). ``tokenizer``: its count, if known."""
    from scaling.plan.memory import loss_networks

    parts = {"tokenizer": tokenizer if tokenizer is not None else training_flops(meta_model(cfg), cfg)[1]}
    nets, side = loss_networks(cfg), cfg.data.image_size
    image = torch.empty(1, 3, side, side, device="meta")
    recon = torch.empty(1, 3, side, side, device="meta", requires_grad=True)
    if "lpips" in nets:
        with FlopCounterMode(display=False) as counter:
            nets["lpips"](recon, image).mean().backward()
        parts["lpips"] = counter.get_total_flops()
    if "teacher" in nets:
        teacher_side = cfg.loss.semantic_teacher_size
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            nets["teacher"].forward_features(torch.empty(1, 3, teacher_side, teacher_side, device="meta"))
        parts["teacher"] = counter.get_total_flops()
    if "discriminator" in nets:
        disc = nets["discriminator"]
        with FlopCounterMode(display=False) as counter:
            disc(recon).mean().backward()  # the generator's loss through it (its weights' grads too, as trained)
            (disc(image).mean() + disc(recon.detach()).mean()).backward()  # its own step
        parts["discriminator"] = counter.get_total_flops()
    return parts


def step_flops_done(parts: dict[str, int], step: int, batch_size: int, gan_start: int) -> int:
    """FLOPs of a run's first ``step`` steps of ``batch_size`` images: every part at each step, the
    discriminator from step ``gan_start`` on. A function of the step alone, so a resumed run continues the
    count and a stretch redone after a preemption is counted once."""
    base = sum(v for k, v in parts.items() if k != "discriminator")
    gan_steps = max(0, step - gan_start) if "discriminator" in parts else 0
    return batch_size * (base * step + parts.get("discriminator", 0) * gan_steps)


def plan(cfg: Config) -> Plan:
    model = meta_model(cfg)
    fwd, both = training_flops(model, cfg)
    return Plan(parameter_counts(model), fwd, both, model, step_flops(cfg, both))
