"""Probe training: a probe's generator (the AR GPT, the flow Transformer: ``scaling.probe.kinds``) on cached
tokens, with the tokenizer trainer's machinery.

The same runtime, FSDP2 parallelisation, torchtitan optimiser containers, DCP checkpoints and USR2/TERM
handling as ``scaling.train.trainer``, so a probe job is preempted, requeued and resumed like a training job.
LlamaGen's recipe for both (SiT's differs only in its betas): AdamW (0.9, 0.95), weight decay 0.05, constant
learning rate after warm-up, clip 1.0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import register_fsdp_forward_method

from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import Config, OptimConfig
from scaling.core.errors import UserError
from scaling.core.run_dir import ProbeDir
from scaling.core.runtime import Runtime, global_mean, uses_bf16
from scaling.core.runtime import autocast as runtime_autocast
from scaling.core.signals import StopSignals, stop_and_hand_over
from scaling.core.train_state import ModuleState, OptimizerState, resume, save, seed_everything
from scaling.data.loader import endless
from scaling.optim.optimizer import build_optimizer, clip_grad_norm
from scaling.parallel.parallelize import parallelize_tokenizer
from scaling.probe.kinds import ProbeKind
from scaling.probe.tokens import token_loader
from scaling.tracking.mlflow_tracker import Tracker

GRAD_CLIP = 1.0


def build_probe_model(cfg: Config, kind: ProbeKind, meta: dict[str, Any], rt: Runtime) -> torch.nn.Module:
    """Built on meta, initialised whole on the device from the run seed, then sharded like a tokenizer."""
    with torch.device("meta"):
        model = kind.build(cfg, meta)
    model.to_empty(device=rt.device)
    torch.manual_seed(cfg.train.seed)
    with torch.no_grad():
        model.init_weights()
    bf16 = uses_bf16(cfg.train.precision, rt.device)
    parallelize_tokenizer(model, cfg.parallel, rt.mesh, param_dtype=torch.bfloat16 if bf16 else torch.float32)
    for method in ("features", "generate"):  # entry points besides forward: FSDP gathers the root's parameters
        register_fsdp_forward_method(model, method)
    return model


def train_probe(cfg: Config, kind: ProbeKind, probe_dir: Path, meta: dict[str, Any], rt: Runtime,
                signals: StopSignals, tracker: Tracker) -> torch.nn.Module:
    """The probe's generator trained for ``probe.steps`` on the split ``meta`` describes, resumed from its last
    checkpoint; its metrics are logged under ``kind.prefix``."""
    p = cfg.probe
    if p.batch_size % rt.world_size:
        raise UserError(f"probe.batch_size: {p.batch_size} does not split over {rt.world_size} ranks")
    seed_everything(cfg.train.seed)
    autocast = runtime_autocast(cfg.train.precision, rt.device)
    model = build_probe_model(cfg, kind, meta, rt)
    optim = OptimConfig(lr=p.lr, min_lr=p.lr, betas=(0.9, 0.95), weight_decay=p.weight_decay, schedule="constant",
                        warmup_steps=p.warmup_steps, grad_clip=GRAD_CLIP)
    opt, sched = build_optimizer(model, optim, p.lr, p.steps, rt.device)
    loader = token_loader(ProbeDir(probe_dir).tokens("train"), p.batch_size // rt.world_size, cfg.train.seed)
    store = CheckpointStore(ProbeDir(probe_dir).checkpoints, keep_last=1)
    stateful = {"model": ModuleState(model), "opt": OptimizerState(opt), "sched": sched}
    step, train_state = resume(store, stateful, loader, rt)
    if train_state is not None:
        tracker.restore_pending(train_state["tracker_pending"])
    if rt.is_main:
        events.record(probe_dir, "start", step=step, world_size=rt.world_size)

    per_sequence = kind.flops(cfg, meta)
    batches, t0, step_at_t0 = endless(loader), time.perf_counter(), step
    while step < p.steps:
        tokens, labels, _ = next(batches)
        # Label dropout for classifier-free guidance, from the checkpointed global RNG (exact resume).
        labels = torch.where(torch.rand(labels.shape) < p.class_dropout, model.null_class, labels)
        inputs, labels = kind.inputs(tokens.to(rt.device), meta), labels.to(rt.device)
        with autocast:
            loss = kind.loss(model, inputs, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad_norm(model, GRAD_CLIP)
        opt.step()
        sched.step()
        step += 1
        if step % p.log_every == 0 or step == p.steps:
            scalars = global_mean({"loss": loss.detach(), "grad_norm": grad_norm}, rt)
            rate = (step - step_at_t0) * p.batch_size / max(time.perf_counter() - t0, 1e-9)
            # Its compute, apart from the tokenizer's train/flops: a function of the step, so a resume continues it.
            spent = {"images_per_s": rate, "sequences_seen": step * p.batch_size,
                     "flops": per_sequence * p.batch_size * step}
            logged = {f"train_{k}": v for k, v in scalars.items()} | spent
            tracker.log_metrics({f"{kind.prefix}/{k}": v for k, v in logged.items()}, step)
        stop = signals.agreed()
        if stop or step % p.ckpt_every == 0 or step == p.steps:
            save(store, step, stateful, loader, tracker, rt)
        if stop:
            stop_and_hand_over(stop, signals, probe_dir, step, tracker, rt)
    return model
