"""Tokenizer training: one ``train()`` that reads top to bottom (nanoGPT / lingua style), on one rank or many.

Every run is FSDP2 over a torchtitan mesh, so one code path trains a tiny model on a laptop and a 3B one on a
cluster (on a world of one the model stays plain: FSDP2 would only copy, see ``needs_fsdp``).
``train.batch_size`` is the global batch: each rank takes its share, in micro-batches with gradient
accumulation when ``parallel.micro_batch_size`` asks for it.

Resume is exact: models, optimisers, schedulers, EMA, step, RNG and the data stream's position are in a
sharded DCP checkpoint; augmentation is seeded per sample. On CPU a killed-and-resumed run ends bitwise equal
to an uninterrupted one, and a checkpoint resumes on any number of ranks.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scaling.core import events, hooks
from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import Config
from scaling.core.config.loader import config_to_dict, flatten
from scaling.core.errors import UserError
from scaling.core.run_dir import RESUMABLE_SECTIONS, RunDir, check_run_dir, claim_run_dir
from scaling.core.runtime import Runtime, global_mean, init_runtime, on_main, uses_bf16
from scaling.core.runtime import autocast as runtime_autocast
from scaling.core.signals import StopSignals, stop_and_hand_over
from scaling.core.train_state import branch, resume, save, seed_everything
from scaling.data.loader import augment, endless, sample_seeds, to_float, train_loader, validation_images
from scaling.metrics.grids import save_recon_grid
from scaling.metrics.pixel import psnr
from scaling.models.factory import bottleneck, parameter_counts
from scaling.models.quantizers import bottleneck_stats
from scaling.parallel.batch import batch_split
from scaling.parallel.parallelize import memory_format
from scaling.plan.cost import with_budget_steps
from scaling.plan.count import step_flops, step_flops_done
from scaling.tracking.mlflow_tracker import Tracker
from scaling.train.branch import trunk_checkpoints, with_trunk_parent
from scaling.train.step import FrozenLosses, build_trainables, train_step
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
    cfg = with_budget_steps(cfg)  # an isoFLOP trial's steps, from its budget; the config saved says them
    cfg = with_trunk_parent(cfg)  # a cooldown branch's MLflow run is a child of its trunk's
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
    started = time.perf_counter()  # this segment's wall-clock, start-up included (what the devices are held)
    micro, accum = batch_split(cfg, rt.world_size)
    preflight(cfg, run_dir=False)  # every rank reads the data and weight files it will use
    # The run directory is checked and claimed by rank 0 alone: a slower rank checking it would find rank 0's claim
    # half made (a non-empty directory with no config yet) and stop with an error.
    on_main(rt, lambda: check_run_dir(cfg))
    frozen = FrozenLosses.build(cfg)  # LPIPS and the semantic teacher, from their weight files
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
    model, disc, sched_g, ema = t.model, t.disc, t.sched_g, t.ema
    frozen.to(device, cfg.parallel)  # replicated on every rank; no gradients, no optimiser state

    # ---- data: this rank's share of every global batch
    loader = train_loader(cfg.data, micro, cfg.train.seed, run.data_cache)
    val_x, _ = validation_images(cfg.data, run.data_cache)

    # ---- resume (the latest complete checkpoint; DCP reshards it to this world size)
    store = CheckpointStore(run.checkpoints, cfg.train.keep_last, cfg.train.milestone_every,
                            async_save=cfg.train.async_checkpoint,
                            on_saved=lambda path: run.last_checkpoint.write_text(str(path.resolve())))
    stateful = t.stateful()
    step, train_state = resume(store, stateful, loader, rt)  # on every rank: it is collective
    branched = train_state is None and bool(cfg.train.branch_from)
    if branched:  # a branch's first start: from its trunk's checkpoint
        step, train_state = branch(trunk_checkpoints(cfg), cfg.train.branch_step, stateful, loader)
    # Compute: FLOPs are a function of the step (as `scaling plan` counts an image); seconds continue from the
    # checkpoint, so a stretch redone after a preemption counts once.
    flops_parts = step_flops(cfg)
    seconds_before = train_state.get("wall_seconds", 0.0) if train_state is not None else 0.0

    def wall_seconds() -> float:
        return seconds_before + time.perf_counter() - started

    tracker = Tracker(cfg.tracking, run_dir, enabled=rt.is_main, background=True)  # never waits on the server
    params = training_params(cfg) | parameter_counts(model) | bottleneck(cfg, model) | {"world_size": rt.world_size}
    tracker.start(params, run_name=run_dir.name)
    if train_state is not None:
        tracker.restore_pending(train_state["tracker_pending"])
    tracker.log_artifact(run.config)
    if step == 0:
        tracker.log_metrics(validate(model, val_x, micro, cfg, rt, autocast, run_dir, 0, tracker), step=0)

    # ---- train
    if rt.is_main:
        trunk = {"branch_from": cfg.train.branch_from} if branched else {}
        events.record(run_dir, "start", step=step, world_size=rt.world_size, **trunk)
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
        xs = micro_batches(batches, cfg, rt, step, accum)
        sums, q = train_step(cfg, t, frozen, xs, accum, autocast, gan_on)
        step += 1

        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            elapsed = time.perf_counter() - t0
            scalars = {f"train/{k}": v for k, v in global_mean(sums, rt).items()}
            images_per_s = (step - step_at_t0) * cfg.train.batch_size / max(elapsed, 1e-9)
            scalars |= {f"train/{k}": v for k, v in bottleneck_stats([q], cfg.quantizer).items()}
            scalars |= {"train/lr": sched_g.schedulers[0].get_last_lr()[0],
                        "train/images_seen": step * cfg.train.batch_size, "train/images_per_s": images_per_s,
                        "train/flops": step_flops_done(flops_parts, step, cfg.train.batch_size, cfg.loss.gan_start),
                        "train/wall_seconds": (wall := wall_seconds()), "train/device_seconds": wall * rt.world_size}
            tracker.log_metrics(scalars, step)
            bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", img_s=f"{images_per_s:.0f}")
            stop_if_diverged(scalars["train/loss"], step, store, run_dir, tracker, rt)
        if step % cfg.train.val_every == 0 or step == cfg.train.steps:
            with ema.swapped_in(model) if ema is not None else nullcontext():
                val_metrics = validate(model, val_x, micro, cfg, rt, autocast, run_dir, step, tracker)
            tracker.log_metrics(val_metrics, step)
            if on_validation is not None and step < cfg.train.steps:  # the last value is the result, not a report
                pruned = bool(on_main(rt, lambda: on_validation(step, val_metrics)))
        if not first_step_recorded and rt.is_main:
            events.record(run_dir, "first_step", step=step)
            first_step_recorded = True
        stop = signals.agreed() if step < cfg.train.steps else None  # a stop after the last step: the run is done
        if stop or pruned or step % cfg.train.ckpt_every == 0 or step == cfg.train.steps:
            if step % cfg.train.log_every:  # a checkpoint is only written after a finite loss (one all-reduce)
                stop_if_diverged(global_mean({"loss": sums["loss"]}, rt)["loss"], step, store, run_dir, tracker, rt)
            # The run's last checkpoint and one it stops on are written in full before anything else happens.
            save(store, step, stateful, loader, tracker, rt, blocking=bool(stop or pruned) or step == cfg.train.steps,
                 extra={"wall_seconds": wall_seconds()})
        bar.update(1)
        if stop:
            bar.close()
            stop_and_hand_over(stop, signals, run_dir, step, tracker, rt)
    bar.close()

    if rt.is_main:
        events.record(run_dir, "pruned" if pruned else "finished", step=step)
    tracker.log_artifact(run.last_checkpoint)
    tracker.finish(status="KILLED" if pruned else "FINISHED")
    return TrainResult(run_dir, tracker.run_id, step, val_metrics, rt.rank, pruned)


def stop_if_diverged(loss: float, step: int, store: CheckpointStore, run_dir: Path, tracker: Tracker,
                     rt: Runtime) -> None:
    """A non-finite loss ends the run (on every rank: ``loss`` is the global mean) before another checkpoint is
    written over the last good one."""
    if math.isfinite(loss):
        return
    store.wait()
    if rt.is_main:
        events.record(run_dir, "diverged", step=step)
    tracker.finish(status="FAILED", retries=2)
    kept = f"its last checkpoint (step {store.latest()}) is kept" if store.latest() is not None else "no checkpoint"
    raise UserError(f"train: the loss is {loss} at step {step}, the run diverged; {kept} "
                    f"(lower optim.lr or set optim.grad_clip, then train a new run)")


def training_params(cfg: Config) -> dict[str, Any]:
    """The config as MLflow params, less the sections that do not shape training (the probe logs its own)."""
    return {k: v for k, v in flatten(config_to_dict(cfg)).items() if not k.startswith(RESUMABLE_SECTIONS)}


def micro_batches(batches: Iterator[Any], cfg: Config, rt: Runtime, step: int, accum: int) -> Iterator[torch.Tensor]:
    """This rank's ``accum`` micro-batches of ``step``: augmented (seeded per sample, so resume is exact),
    on the device, in the layout the model computes in. The loader's workers decode; crop, resize and flip run on
    the device (uint8 crosses, a quarter of float's bytes), not as a loop of CPU resizes on the training thread."""
    for _ in range(accum):
        images, _, indices = next(batches)
        hooks.trace_samples(rt.rank, step, indices)
        images = images.to(rt.device, non_blocking=True)
        x = augment(images, cfg.data, sample_seeds(cfg.train.seed, step, indices))
        yield x.contiguous(memory_format=memory_format(cfg.parallel))


@torch.no_grad()
def validate(model: torch.nn.Module, val_x: torch.Tensor, chunk: int, cfg: Config, rt: Runtime, autocast: Any,
             run_dir: Path, step: int, tracker: Tracker) -> dict[str, float]:
    """Reconstruction loss, PSNR and codebook use on the held-out images; rank 0 saves a reconstruction grid.
    Every rank runs the same images (the sharded model needs all ranks); the set is small."""
    device = rt.device
    was_training = model.training
    model.eval()
    mse, psnrs, outs, first = [], [], [], None
    for images in val_x.split(chunk):
        x = to_float(images).to(device)
        with autocast:
            recon, q = model(x)
        recon = recon.float()
        mse.append(F.mse_loss(recon, x, reduction="none").flatten(1).mean(1))
        psnrs.append(psnr(recon, x))
        outs.append(q)
        if first is None:
            first = (x, recon)
    model.train(was_training)
    if rt.is_main:
        run = RunDir(run_dir)
        grid = save_recon_grid(*first, run.reconstruction(step))
        tracker.log_artifact(grid, run.reconstructions.name)  # MLflow's artifact folder mirrors the run's
    return {"val/recon_loss": float(torch.cat(mse).mean()), "val/psnr": float(torch.cat(psnrs).mean())
            } | {f"val/{k}": v for k, v in bottleneck_stats(outs, cfg.quantizer).items()}

