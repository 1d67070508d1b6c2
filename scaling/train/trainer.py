"""Tokenizer training: one ``train()`` that reads top to bottom (nanoGPT / lingua style).

Resume is exact: models, optimisers, schedulers, EMA, step, every RNG (the augmentation generator
included) and the data stream's position are checkpointed, so on CPU a killed-and-resumed run ends
bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from scaling.config import Config
from scaling.config.loader import config_to_dict, flatten
from scaling.data.loader import augment, to_float, train_loader, validation_images
from scaling.eval.images import save_recon_grid
from scaling.eval.metrics import psnr
from scaling.losses.gan import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from scaling.losses.perceptual import PerceptualLoss
from scaling.losses.semantic import SemanticLoss
from scaling.models.quantizers import codebook_stats
from scaling.models.factory import build_tokenizer, parameter_counts
from scaling.tracking.mlflow_tracker import Tracker
from scaling.train.checkpoint import CheckpointStore
from scaling.train import events
from scaling.train.preemption import StopSignals
from scaling.train.preflight import preflight
from scaling.train.run_dir import claim_run_dir
from scaling.train.schedule import lr_multiplier


@dataclass
class TrainResult:
    run_dir: Path
    run_id: str | None
    step: int
    val: dict[str, float]


def train(cfg: Config) -> TrainResult:
    # From here on USR2/TERM wait for a step boundary, where a checkpoint is safe.
    with StopSignals() as signals:
        return _train(cfg, signals)


def _train(cfg: Config, signals: StopSignals) -> TrainResult:
    # ---- checks that must pass before anything is written or trained
    resuming = preflight(cfg)
    perceptual = PerceptualLoss(cfg.loss.vgg_weights, cfg.loss.lpips_weights) if cfg.loss.perceptual_weight else None
    semantic = SemanticLoss(cfg.loss) if cfg.loss.semantic_weight else None  # frozen teacher
    run_dir = claim_run_dir(cfg)

    # ---- device, precision, determinism
    device = torch.device("cuda" if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()) else "cpu")
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    seed_everything(cfg.train.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False  # a debugging aid, costly, not needed

    # ---- models, optimisers, schedules
    model = build_tokenizer(cfg).to(device)
    disc = PatchDiscriminator(cfg.loss.disc_layers, cfg.loss.disc_channels).to(device) if cfg.loss.gan_weight else None
    for frozen in (perceptual, semantic):
        if frozen is not None:
            frozen.to(device)
    opt_g = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                              weight_decay=cfg.optim.weight_decay)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lr_multiplier(cfg.optim, cfg.train.steps))
    opt_d = sched_d = None
    if disc is not None:
        opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.optim.disc_lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lr_multiplier(cfg.optim, cfg.train.steps))
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True)
           if cfg.train.ema_decay else None)

    # ---- data
    loader = train_loader(cfg.data, cfg.train.batch_size, cfg.train.seed, run_dir / "cache")
    aug_gen = torch.Generator().manual_seed(cfg.train.seed)
    val_x, _ = validation_images(cfg.data, run_dir / "cache")

    # ---- resume
    store = CheckpointStore(run_dir / "checkpoints", cfg.train.keep_last, cfg.train.milestone_every)
    stateful = {"model": model, "opt_g": opt_g, "sched_g": sched_g, "disc": disc, "opt_d": opt_d,
                "sched_d": sched_d, "ema": ema, "loader": loader}
    step = 0
    latest = store.latest() if resuming else None
    if latest is not None:
        state = store.load(latest)
        for name, obj in stateful.items():
            if obj is not None:
                obj.load_state_dict(state[name])
        aug_gen.set_state(state["aug_gen"])
        set_rng_state(state["rng"])
        step = state["step"]

    tracker = Tracker(cfg.tracking, run_dir)
    params = flatten(config_to_dict(cfg)) | parameter_counts(model)
    run_id = tracker.start(params, run_name=run_dir.name)
    if latest is not None:
        tracker.restore_pending(state["tracker_pending"])
    tracker.log_artifact(run_dir / "config.toml")
    if step == 0:
        tracker.log_metrics(validate(model, val_x, cfg, device, autocast, run_dir, 0, tracker), step=0)

    # ---- train
    events.record(run_dir, "start", step=step)
    first_step_recorded = False
    batches = endless(loader)
    bar = tqdm(total=cfg.train.steps, initial=step, disable=not cfg.train.progress, unit="step", dynamic_ncols=True)
    t0, images_at_t0 = time.perf_counter(), step * cfg.train.batch_size
    val_metrics: dict[str, float] = {}
    while step < cfg.train.steps:
        images, _ = next(batches)
        x = augment(images, cfg.data, aug_gen).to(device, non_blocking=True)
        gan_on = disc is not None and step >= cfg.loss.gan_start

        with autocast:
            temperature = cfg.loss.entropy_temperature if cfg.loss.entropy_weight else None
            out = model(x, temperature, semantic=True) if semantic is not None else model(x, temperature)
            recon, q, *student = out  # student: the semantic predictions, when asked for
            losses = generator_losses(cfg, x, recon, q, perceptual, disc if gan_on else None, semantic, *student)
        opt_g.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.optim.grad_clip:
            losses["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt_g.step()
        sched_g.step()
        if gan_on:
            with autocast:
                d_loss = hinge_d_loss(disc(x), disc(recon.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            losses["disc"] = d_loss
        if sched_d is not None:
            sched_d.step()  # stepped from step 0 so its schedule follows the global step
        if ema is not None:
            ema.update_parameters(model)
        step += 1

        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            elapsed = time.perf_counter() - t0
            scalars = {f"train/{k}": float(v.detach()) for k, v in losses.items()}
            usage, perplexity = codebook_stats(q.indices, cfg.quantizer.codebook_size)
            scalars |= {"train/codebook_usage": usage, "train/perplexity": perplexity,
                        "train/lr": sched_g.get_last_lr()[0], "train/images_seen": step * cfg.train.batch_size,
                        "train/images_per_s": (step * cfg.train.batch_size - images_at_t0) / max(elapsed, 1e-9)}
            tracker.log_metrics(scalars, step)
            bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", img_s=f"{scalars['train/images_per_s']:.0f}")
        if step % cfg.train.val_every == 0 or step == cfg.train.steps:
            val_metrics = validate(ema.module if ema is not None else model, val_x, cfg, device, autocast,
                                   run_dir, step, tracker)
            tracker.log_metrics(val_metrics, step)
        if not first_step_recorded:
            events.record(run_dir, "first_step", step=step)
            first_step_recorded = True
        stop = signals.agreed()
        if stop or step % cfg.train.ckpt_every == 0 or step == cfg.train.steps:
            tracker.flush()  # what is still pending goes into the checkpoint, so no point is lost
            state = {name: obj.state_dict() for name, obj in stateful.items() if obj is not None}
            state |= {"aug_gen": aug_gen.get_state(), "rng": get_rng_state(), "step": step,
                      "tracker_pending": tracker.pending()}
            path = store.save(step, state)
            (run_dir / "last_checkpoint").write_text(str(path.resolve()))
        bar.update(1)
        if stop:
            bar.close()
            events.record(run_dir, "preempted" if stop == "preempt" else "cancelled", step=step)
            tracker.finish(status="KILLED")  # reopened as RUNNING if the run is resumed
            signals.hand_over(stop)
    bar.close()

    events.record(run_dir, "finished", step=step)
    tracker.log_artifact(run_dir / "last_checkpoint")
    tracker.finish()
    return TrainResult(run_dir, run_id, step, val_metrics)


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
def validate(model: torch.nn.Module, val_x: torch.Tensor, cfg: Config, device: torch.device, autocast: Any,
             run_dir: Path, step: int, tracker: Tracker) -> dict[str, float]:
    """Reconstruction loss, PSNR and codebook use on the held-out images; saves a reconstruction grid."""
    was_training = model.training
    model.eval()
    mse, psnrs, indices, first = [], [], [], None
    for chunk in val_x.split(cfg.train.batch_size):
        x = to_float(chunk).to(device)
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
    grid = save_recon_grid(*first, run_dir / "reconstructions" / f"step-{step:08d}.png")
    tracker.log_artifact(grid, "reconstructions")
    return {"val/recon_loss": float(torch.cat(mse).mean()), "val/psnr": float(torch.cat(psnrs).mean()),
            "val/codebook_usage": usage, "val/perplexity": perplexity}


def endless(loader: Any):
    """Batches across epochs; the loader's own state tracks the epoch and the position in it."""
    while True:
        yield from loader


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
