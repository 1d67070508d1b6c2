"""Tokenizer training: one ``train()`` that reads top to bottom (nanoGPT / lingua style), on one rank or many.

Every run is FSDP2 over a torchtitan mesh, so one code path trains a tiny model on a laptop and a 3B one on a
cluster (on a world of one in fp32 the model stays plain: FSDP2 would only copy, see ``needs_fsdp``).
``train.batch_size`` is the global batch: each rank takes its share, in micro-batches with gradient
accumulation when ``parallel.micro_batch_size`` asks for it.

Resume is exact: models, optimisers, schedulers, EMA, step, RNG and the data stream's position are in a
sharded DCP checkpoint; augmentation is seeded per sample. On CPU a killed-and-resumed run ends bitwise equal
to an uninterrupted one, and a checkpoint resumes on any number of ranks.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scaling.core import events, hooks
from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import Config
from scaling.core.config.loader import config_to_dict, flatten
from scaling.core.run_dir import RESUMABLE_SECTIONS, RunDir, claim_run_dir
from scaling.core.runtime import Runtime, global_mean, init_runtime, on_main, uses_bf16
from scaling.core.runtime import autocast as runtime_autocast
from scaling.core.signals import StopSignals, stop_and_hand_over
from scaling.core.train_state import ModuleState, resume, save, seed_everything
from scaling.data.loader import augment, endless, sample_seeds, to_float, train_loader, validation_images
from scaling.losses.gan import PatchDiscriminator, build_discriminator, hinge_d_loss, hinge_g_loss
from scaling.losses.perceptual import PerceptualLoss
from scaling.losses.semantic import SemanticLoss
from scaling.metrics.grids import save_recon_grid
from scaling.metrics.pixel import psnr
from scaling.models.factory import build_tokenizer, parameter_counts
from scaling.models.quantizers import codebook_stats
from scaling.optim.ema import EMA
from scaling.optim.optimizer import build_optimizer, clip_grad_norm
from scaling.parallel.batch import batch_split
from scaling.parallel.parallelize import parallelize_tokenizer, set_gradient_sync, shard
from scaling.tracking.mlflow_tracker import Tracker
from scaling.train.preflight import preflight


@dataclass
class TrainResult:
    run_dir: Path
    run_id: str | None
    step: int
    val: dict[str, float]
    rank: int = 0
    pruned: bool = False


# Called on rank 0 after each validation with (step, metrics); True stops the run early (a sweep's pruner).
OnValidation = Callable[[int, dict[str, float]], bool]


def train(cfg: Config, on_validation: OnValidation | None = None) -> TrainResult:
    # From here on USR2/TERM wait for a step boundary, where a checkpoint is safe.
    with StopSignals() as signals:
        rt = init_runtime(cfg.train.device)
        try:
            return _train(cfg, signals, rt, on_validation)
        finally:
            rt.close()


def _train(cfg: Config, signals: StopSignals, rt: Runtime, on_validation: OnValidation | None = None
           ) -> TrainResult:
    # ---- checks that must pass before anything is written or trained
    micro, accum = batch_split(cfg, rt.world_size)
    preflight(cfg)
    perceptual = PerceptualLoss(cfg.loss.vgg_weights, cfg.loss.lpips_weights) if cfg.loss.perceptual_weight else None
    semantic = SemanticLoss(cfg.loss) if cfg.loss.semantic_weight else None  # frozen teacher
    run_dir = on_main(rt, lambda: claim_run_dir(cfg))
    run = RunDir(run_dir)

    # ---- precision, determinism
    device = rt.device
    bf16 = uses_bf16(cfg.train.precision, device)
    autocast = runtime_autocast(cfg.train.precision, device)
    seed_everything(cfg.train.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # a debugging aid, costly, not needed

    # ---- models and optimisers, sharded over the ranks
    t = build_trainables(cfg, rt, bf16)
    model, disc, opt_g, sched_g, opt_d, sched_d, ema = (t.model, t.disc, t.opt_g, t.sched_g, t.opt_d, t.sched_d,
                                                        t.ema)
    for frozen in (perceptual, semantic):
        if frozen is not None:
            frozen.to(device)  # replicated on every rank; no gradients, no optimiser state

    # ---- data: this rank's share of every global batch
    loader = train_loader(cfg.data, micro, cfg.train.seed, run.data_cache)
    val_x, _ = validation_images(cfg.data, run.data_cache)

    # ---- resume (the latest complete checkpoint; DCP reshards it to this world size)
    store = CheckpointStore(run.checkpoints, cfg.train.keep_last, cfg.train.milestone_every,
                            async_save=cfg.train.async_checkpoint,
                            on_saved=lambda path: run.last_checkpoint.write_text(str(path.resolve())))
    stateful = t.stateful()
    step, train_state = resume(store, stateful, loader, rt)  # on every rank: it is collective

    tracker = Tracker(cfg.tracking, run_dir, enabled=rt.is_main)
    params = training_params(cfg) | parameter_counts(model) | {"world_size": rt.world_size}
    run_id = tracker.start(params, run_name=run_dir.name)
    if train_state is not None:
        tracker.restore_pending(train_state["tracker_pending"])
    tracker.log_artifact(run.config)
    if step == 0:
        tracker.log_metrics(validate(model, val_x, micro, cfg, rt, autocast, run_dir, 0, tracker), step=0)

    # ---- train
    if rt.is_main:
        events.record(run_dir, "start", step=step, world_size=rt.world_size)
    first_step_recorded = False
    batches = endless(loader)
    bar = tqdm(total=cfg.train.steps, initial=step, disable=not (cfg.train.progress and rt.is_main), unit="step",
               dynamic_ncols=True)
    t0, step_at_t0 = time.perf_counter(), step
    val_metrics: dict[str, float] = {}
    delay = hooks.step_delay()
    pruned = False
    while step < cfg.train.steps and not pruned:
        if delay:
            time.sleep(delay)
        gan_on = disc is not None and step >= cfg.loss.gan_start
        opt_g.zero_grad(set_to_none=True)
        reals, fakes, sums = [], [], {}
        for i in range(accum):
            images, _, indices = next(batches)
            hooks.trace_samples(rt.rank, step, indices)
            x = augment(images, cfg.data, sample_seeds(cfg.train.seed, step, indices)).to(device, non_blocking=True)
            set_gradient_sync(model, i == accum - 1)  # reduce-scatter once, after the last micro-batch
            with autocast:
                temperature = cfg.loss.entropy_temperature if cfg.loss.entropy_weight else None
                out = model(x, temperature, semantic=True) if semantic is not None else model(x, temperature)
                recon, q, *student = out  # student: the semantic predictions, when asked for
                losses = generator_losses(cfg, x, recon, q, perceptual, disc if gan_on else None, semantic, *student)
            (losses["loss"] / accum).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach() / accum
            reals.append(x)
            fakes.append(recon.detach())
        if cfg.optim.grad_clip:
            sums["grad_norm"] = clip_grad_norm(model, cfg.optim.grad_clip)
        opt_g.step()
        sched_g.step()
        if gan_on:
            opt_d.zero_grad(set_to_none=True)
            for i, (x, fake) in enumerate(zip(reals, fakes)):
                set_gradient_sync(disc, i == accum - 1)
                with autocast:
                    d_loss = hinge_d_loss(disc(x), disc(fake))
                (d_loss / accum).backward()
                sums["disc"] = sums.get("disc", 0.0) + d_loss.detach() / accum
            opt_d.step()
        if sched_d is not None:
            sched_d.step()  # stepped from step 0 so its schedule follows the global step
        if ema is not None:
            ema.update(model)
        step += 1

        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            elapsed = time.perf_counter() - t0
            scalars = {f"train/{k}": v for k, v in global_mean(sums, rt).items()}
            usage, perplexity = codebook_stats(q.indices, cfg.quantizer.codebook_size)
            images_per_s = (step - step_at_t0) * cfg.train.batch_size / max(elapsed, 1e-9)
            scalars |= {"train/codebook_usage": usage, "train/perplexity": perplexity,
                        "train/lr": sched_g.schedulers[0].get_last_lr()[0],
                        "train/images_seen": step * cfg.train.batch_size, "train/images_per_s": images_per_s}
            tracker.log_metrics(scalars, step)
            bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", img_s=f"{images_per_s:.0f}")
        if step % cfg.train.val_every == 0 or step == cfg.train.steps:
            with ema.swapped_in(model) if ema is not None else nullcontext():
                val_metrics = validate(model, val_x, micro, cfg, rt, autocast, run_dir, step, tracker)
            tracker.log_metrics(val_metrics, step)
            if on_validation is not None and step < cfg.train.steps:  # the last value is the result, not a report
                pruned = bool(on_main(rt, lambda: on_validation(step, val_metrics)))
        if not first_step_recorded and rt.is_main:
            events.record(run_dir, "first_step", step=step)
            first_step_recorded = True
        stop = signals.agreed()
        if stop or pruned or step % cfg.train.ckpt_every == 0 or step == cfg.train.steps:
            # The run's last checkpoint and one it stops on are written in full before anything else happens.
            save(store, step, stateful, loader, tracker, rt, blocking=bool(stop or pruned) or step == cfg.train.steps)
        bar.update(1)
        if stop:
            bar.close()
            stop_and_hand_over(stop, signals, run_dir, step, tracker, rt)
    bar.close()

    if rt.is_main:
        events.record(run_dir, "pruned" if pruned else "finished", step=step)
    tracker.log_artifact(run.last_checkpoint)
    tracker.finish(status="KILLED" if pruned else "FINISHED")
    return TrainResult(run_dir, run_id, step, val_metrics, rt.rank, pruned)


def training_params(cfg: Config) -> dict[str, Any]:
    """The config as MLflow params, less the sections that do not shape training (the probe logs its own)."""
    return {k: v for k, v in flatten(config_to_dict(cfg)).items() if not k.startswith(RESUMABLE_SECTIONS)}


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
        out: dict[str, Any] = {"model": ModuleState(self.model), "opt_g": self.opt_g, "sched_g": self.sched_g}
        if self.disc is not None:
            out |= {"disc": ModuleState(self.disc), "opt_d": self.opt_d, "sched_d": self.sched_d}
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
        t.disc = shard(build_discriminator(cfg.loss).to(rt.device), rt.mesh)
        t.opt_d, t.sched_d = build_optimizer(t.disc, cfg.optim, cfg.optim.disc_lr, cfg.train.steps, rt.device)
    return t


def generator_losses(cfg: Config, x: torch.Tensor, recon: torch.Tensor, q: Any,
                     perceptual: PerceptualLoss | None, disc: PatchDiscriminator | None,
                     semantic: SemanticLoss | None = None, student: torch.Tensor | None = None,
                     ) -> dict[str, torch.Tensor]:
    """Weighted generator objective; a zero weight skips its computation entirely."""
    lc = cfg.loss
    rec = F.l1_loss(recon.float(), x) if lc.recon == "l1" else F.mse_loss(recon.float(), x)
    out = {"recon": rec, "codebook": q.codebook_loss, "commit": q.commit_loss}
    total = lc.recon_weight * rec + lc.codebook_weight * (q.codebook_loss + q.commit_loss)
    if lc.entropy_weight:
        out["entropy"] = q.entropy_loss
        total = total + lc.entropy_weight * q.entropy_loss
    if perceptual is not None:
        out["perceptual"] = perceptual(recon, x)
        total = total + lc.perceptual_weight * out["perceptual"]
    if disc is not None:
        out["gan"] = hinge_g_loss(disc(recon))
        total = total + lc.gan_weight * out["gan"]
    if semantic is not None:
        out["semantic"], out["semantic_cos"] = semantic(student, x)
        total = total + lc.semantic_weight * out["semantic"]
    out["loss"] = total
    return out


@torch.no_grad()
def validate(model: torch.nn.Module, val_x: torch.Tensor, chunk: int, cfg: Config, rt: Runtime, autocast: Any,
             run_dir: Path, step: int, tracker: Tracker) -> dict[str, float]:
    """Reconstruction loss, PSNR and codebook use on the held-out images; rank 0 saves a reconstruction grid.
    Every rank runs the same images (the sharded model needs all ranks); the set is small."""
    device = rt.device
    was_training = model.training
    model.eval()
    mse, psnrs, indices, first = [], [], [], None
    for images in val_x.split(chunk):
        x = to_float(images).to(device)
        with autocast:
            recon, q = model(x)
        recon = recon.float()
        mse.append(F.mse_loss(recon, x, reduction="none").flatten(1).mean(1))
        psnrs.append(psnr(recon, x))
        indices.append(q.indices.flatten())
        if first is None:
            first = (x, recon)
    model.train(was_training)
    usage, perplexity = codebook_stats(torch.cat(indices), cfg.quantizer.codebook_size)
    if rt.is_main:
        run = RunDir(run_dir)
        grid = save_recon_grid(*first, run.reconstruction(step))
        tracker.log_artifact(grid, run.reconstructions.name)  # MLflow's artifact folder mirrors the run's
    return {"val/recon_loss": float(torch.cat(mse).mean()), "val/psnr": float(torch.cat(psnrs).mean()),
            "val/codebook_usage": usage, "val/perplexity": perplexity}

