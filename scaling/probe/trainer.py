"""AR probe training: the class-conditional GPT on cached tokens, with the tokenizer trainer's machinery.

The same runtime, FSDP2 parallelisation, torchtitan optimiser containers, DCP checkpoints and USR2/TERM
handling as ``scaling.train.trainer``, so a probe job is preempted, requeued and resumed like a training job.
LlamaGen's recipe: AdamW (0.9, 0.95), weight decay 0.05, constant learning rate after warm-up, clip 1.0.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import register_fsdp_forward_method

from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import Config, OptimConfig
from scaling.core.errors import UserError
from scaling.core.run_dir import ProbeDir
from scaling.core.runtime import Runtime, global_mean, uses_bf16
from scaling.core.runtime import autocast as runtime_autocast
from scaling.core.signals import StopSignals, stop_and_hand_over
from scaling.core.train_state import ModuleState, resume, save, seed_everything
from scaling.data.loader import endless
from scaling.optim.optimizer import build_optimizer, clip_grad_norm
from scaling.parallel.parallelize import parallelize_tokenizer
from scaling.probe.gpt import ClassConditionalGPT, sequence_flops
from scaling.probe.tokens import token_loader
from scaling.tracking.mlflow_tracker import Tracker

GRAD_CLIP = 1.0


def build_gpt(cfg: Config, vocab: int, num_classes: int, seq_len: int, rt: Runtime) -> ClassConditionalGPT:
    """Built on meta, initialised whole on the device from the run seed, then sharded like a tokenizer."""
    with torch.device("meta"):
        model = ClassConditionalGPT(cfg.probe.size, vocab, num_classes, seq_len, cfg.probe.dropout)
    model.to_empty(device=rt.device)
    torch.manual_seed(cfg.train.seed)
    with torch.no_grad():
        model.init_weights()
    bf16 = uses_bf16(cfg.train.precision, rt.device)
    parallelize_tokenizer(model, cfg.parallel, rt.mesh, param_dtype=torch.bfloat16 if bf16 else torch.float32)
    for method in ("features", "generate"):  # entry points besides forward: FSDP gathers the root's parameters
        register_fsdp_forward_method(model, method)
    return model


def train_ar(cfg: Config, probe_dir: Path, meta: dict[str, Any], rt: Runtime, signals: StopSignals,
             tracker: Tracker) -> ClassConditionalGPT:
    p = cfg.probe
    if p.batch_size % rt.world_size:
        raise UserError(f"probe.batch_size: {p.batch_size} does not split over {rt.world_size} ranks")
    seed_everything(cfg.train.seed)
    autocast = runtime_autocast(cfg.train.precision, rt.device)
    model = build_gpt(cfg, cfg.quantizer.codebook_size, meta["num_classes"], meta["seq_len"], rt)
    optim = OptimConfig(lr=p.lr, min_lr=p.lr, betas=(0.9, 0.95), weight_decay=p.weight_decay, schedule="constant",
                        warmup_steps=p.warmup_steps, grad_clip=GRAD_CLIP)
    opt, sched = build_optimizer(model, optim, p.lr, p.steps, rt.device)
    loader = token_loader(ProbeDir(probe_dir).tokens("train"), p.batch_size // rt.world_size, cfg.train.seed)
    store = CheckpointStore(ProbeDir(probe_dir).checkpoints, keep_last=1)
    stateful = {"model": ModuleState(model), "opt": opt, "sched": sched}
    step, train_state = resume(store, stateful, loader, rt)
    if train_state is not None:
        tracker.restore_pending(train_state["tracker_pending"])
    if rt.is_main:
        events.record(probe_dir, "start", step=step, world_size=rt.world_size)

    per_sequence = sequence_flops(p.size, cfg.quantizer.codebook_size, meta["num_classes"], meta["seq_len"])
    batches, t0, step_at_t0 = endless(loader), time.perf_counter(), step
    while step < p.steps:
        tokens, labels, _ = next(batches)
        # Label dropout for classifier-free guidance, from the checkpointed global RNG (exact resume).
        labels = torch.where(torch.rand(labels.shape) < p.class_dropout, model.null_class, labels)
        tokens, labels = tokens.to(rt.device), labels.to(rt.device)
        with autocast:
            logits = model(tokens, labels)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
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
            spent = {"probe/images_per_s": rate, "probe/sequences_seen": step * p.batch_size,
                     "probe/flops": per_sequence * p.batch_size * step}
            tracker.log_metrics({f"probe/train_{k}": v for k, v in scalars.items()} | spent, step)
        stop = signals.agreed()
        if stop or step % p.ckpt_every == 0 or step == p.steps:
            save(store, step, stateful, loader, tracker, rt)
        if stop:
            stop_and_hand_over(stop, signals, probe_dir, step, tracker, rt)
    return model
