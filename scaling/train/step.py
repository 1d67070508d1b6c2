"""One training step and what it acts on, apart from the loop (lingua's split): the trainables the trainer
builds (generator, discriminator, optimisers, schedules, EMA), the frozen loss networks, the generator's
objective, and ``train_step``. The trainer's loop and ``benchmarks/train_throughput.py`` both take this step, so
what the benchmark times is what training runs. Nothing here imports the data, tracking or launch layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from scaling.core.config import Config, ParallelConfig
from scaling.core.runtime import Runtime
from scaling.core.train_state import ModuleState, OptimizerState
from scaling.losses.gan import PatchDiscriminator, build_discriminator, hinge_d_loss, hinge_g_loss
from scaling.losses.perceptual import PerceptualLoss
from scaling.losses.semantic import SemanticLoss
from scaling.models.factory import build_tokenizer
from scaling.models.nested import coarse_targets
from scaling.optim.ema import EMA
from scaling.optim.optimizer import build_optimizer, clip_grad_norm
from scaling.parallel.parallelize import memory_format, parallelize_tokenizer, set_gradient_sync, shard


@dataclass
class FrozenLosses:
    """The loss networks that do not train: LPIPS and the semantic teacher (None where their weight is 0)."""

    perceptual: PerceptualLoss | None = None
    semantic: SemanticLoss | None = None

    @classmethod
    def build(cls, cfg: Config) -> FrozenLosses:
        lc = cfg.loss
        return cls(PerceptualLoss(lc.vgg_weights, lc.lpips_weights) if lc.perceptual_weight else None,
                   SemanticLoss(lc) if lc.semantic_weight else None)

    def to(self, device: torch.device, parallel: ParallelConfig) -> FrozenLosses:
        """On ``device``, in the tokenizer's memory format; compiled when the tokenizer is."""
        for net in (self.perceptual, self.semantic):
            if net is not None:
                net.to(device, memory_format=memory_format(parallel))
                if parallel.compile:
                    net.compile_forward()
        return self


def train_step(cfg: Config, t: Trainables, frozen: FrozenLosses, micro_batches: Iterable[torch.Tensor],
               accum: int, autocast: Any, gan_on: bool) -> tuple[dict[str, torch.Tensor], Any]:
    """One optimiser step of the generator over ``accum`` micro-batches (gradients reduced after the last),
    then, with ``gan_on``, one of the discriminator on the same reals and reconstructions; schedules and EMA
    follow. Returns the mean losses (tensors: nothing here waits for the device) and the last ``QuantOut``."""
    t.opt_g.zero_grad(set_to_none=True)
    reals, fakes, sums = [], [], {}
    disc = t.disc if gan_on else None
    temperature = cfg.loss.entropy_temperature if cfg.loss.entropy_weight else None
    semantic = frozen.semantic is not None
    for i, x in enumerate(micro_batches):
        set_gradient_sync(t.model, i == accum - 1)  # reduce-scatter once, after the last micro-batch
        with autocast:
            recon, q, *student = t.model(x, temperature, semantic=True) if semantic else t.model(x, temperature)
            losses = generator_losses(cfg, x, recon, q, frozen.perceptual, disc, frozen.semantic, *student)
        (losses["loss"] / accum).backward()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.detach() / accum
        reals.append(x)
        fakes.append(recon.detach())
    if cfg.optim.grad_clip:
        sums["grad_norm"] = clip_grad_norm(t.model, cfg.optim.grad_clip)
    t.opt_g.step()
    t.sched_g.step()
    if disc is not None:
        t.opt_d.zero_grad(set_to_none=True)
        for i, (x, fake) in enumerate(zip(reals, fakes)):
            set_gradient_sync(disc, i == accum - 1)
            with autocast:
                d_loss = hinge_d_loss(disc(x), disc(fake))
            (d_loss / accum).backward()
            sums["disc"] = sums.get("disc", 0.0) + d_loss.detach() / accum
        t.opt_d.step()
    if t.sched_d is not None:
        t.sched_d.step()  # stepped from step 0 so its schedule follows the global step
    if t.ema is not None:
        t.ema.update(t.model)
    return sums, q


@dataclass
class Trainables:
    """What a checkpoint holds besides the run's own state: models, optimisers, schedules, EMA."""

    model: torch.nn.Module
    opt_g: Any
    sched_g: Any
    disc: torch.nn.Module | None = None
    opt_d: Any = None
    sched_d: Any = None
    ema: EMA | None = None

    def stateful(self) -> dict[str, Any]:
        """The checkpoint's entries, every one resharded by DCP on load."""
        out: dict[str, Any] = {"model": ModuleState(self.model), "opt_g": OptimizerState(self.opt_g),
                               "sched_g": self.sched_g}
        if self.disc is not None:
            out |= {"disc": ModuleState(self.disc), "opt_d": OptimizerState(self.opt_d), "sched_d": self.sched_d}
        if self.ema is not None:
            out["ema"] = self.ema
        return out


def build_trainables(cfg: Config, rt: Runtime, bf16: bool) -> Trainables:
    """The generator built on meta, initialised whole on the device (so its values do not depend on the world
    size), then checkpointed/compiled/sharded; the discriminator, optimisers, schedules and EMA around it."""
    with torch.device("meta"):
        model = build_tokenizer(cfg)
    model.to_empty(device=rt.device)
    torch.manual_seed(cfg.train.seed)
    with torch.no_grad():
        model.init_weights()
    parallelize_tokenizer(model, cfg.parallel, rt.mesh, param_dtype=torch.bfloat16 if bf16 else torch.float32)
    opt_g, sched_g = build_optimizer(model, cfg.optim, cfg.optim.lr, cfg.train.steps, rt.device)
    t = Trainables(model, opt_g, sched_g, ema=EMA(model, cfg.train.ema_decay) if cfg.train.ema_decay else None)
    if cfg.loss.gan_weight:  # small: data-parallel as one FSDP unit
        t.disc = build_discriminator(cfg.loss).to(rt.device)
        if cfg.parallel.compile:
            t.disc.compile(fullgraph=True)  # one graph: it declares no units
        t.disc = shard(t.disc, rt.mesh)
        t.opt_d, t.sched_d = build_optimizer(t.disc, cfg.optim, cfg.optim.disc_lr, cfg.train.steps, rt.device)
    return t


def generator_losses(cfg: Config, x: torch.Tensor, recon: torch.Tensor, q: Any,
                     perceptual: PerceptualLoss | None, disc: PatchDiscriminator | None,
                     semantic: SemanticLoss | None = None, student: torch.Tensor | None = None,
                     ) -> dict[str, torch.Tensor]:
    """Weighted generator objective; a zero weight skips its computation entirely. Reconstruction and perceptual
    losses compare with the image, or with coarse-to-fine tokens with each prefix's degraded image."""
    lc, target = cfg.loss, x
    if cfg.model.coarse_to_fine and q.kept is not None:  # DetailFlow: each prefix against its degraded image
        m = cfg.model
        target = coarse_targets(x, q.kept, m.num_tokens, m.coarse_power, m.coarse_min_side)
    rec = F.l1_loss(recon.float(), target) if lc.recon == "l1" else F.mse_loss(recon.float(), target)
    out = {"recon": rec, "codebook": q.codebook_loss, "commit": q.commit_loss}
    total = lc.recon_weight * rec + lc.codebook_weight * (q.codebook_loss + q.commit_loss)
    if cfg.quantizer.kind == "kl":  # already weighted by quantizer.kl_weight
        out["kl"] = q.kl_loss
        total = total + q.kl_loss
    if lc.entropy_weight:
        out["entropy"] = q.entropy_loss
        total = total + lc.entropy_weight * q.entropy_loss
    if perceptual is not None:
        out["perceptual"] = perceptual(recon, target)
        total = total + lc.perceptual_weight * out["perceptual"]
    if disc is not None:
        out["gan"] = hinge_g_loss(disc(recon))
        total = total + lc.gan_weight * out["gan"]
    if semantic is not None:
        out["semantic"], out["semantic_cos"] = semantic(student, x)
        total = total + lc.semantic_weight * out["semantic"]
    out["loss"] = total
    return out
