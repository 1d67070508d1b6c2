"""The platform's training step against a bare PyTorch loop of the same model: what the platform costs per step.

    python benchmarks/step_overhead.py                      # the tiny study's width-32 trial, batch 32
    python benchmarks/step_overhead.py gigatok-tiny --model.base_channels 16 --rounds 5

(a) platform: ``scaling.train.trainer.train`` itself, one process, on a synthetic MDS split made by
``scaling.data.build.build_synthetic``, MLflow to a temporary sqlite store, as a trial runs it (loader,
augmentation, parallelisation, torchtitan AdamW, clipping, logging every ``train.log_every`` steps).
A step is the time between two consecutive steps' first micro-batches (``hooks.trace_samples``), so it
includes everything the loop does per step; the run's first steps (warm-up) and its last step (final
validation and checkpoint) are left out. Validation and checkpoints are moved past the run's end.
(b) bare: the same model and losses (``train_throughput.make_step`` with ``--no-fsdp``: ``generator_losses``,
``clip_grad_norm_``, ``torch.optim.AdamW``), no wrapper, tracker, loader or checkpoint, on one fixed batch.

The two alternate, ``--rounds`` times each, each round a fresh process with one thread; the figures are medians over all
timed steps of each, in wall-clock time and in the process's CPU time (``time.process_time``: on a shared
machine it moves less with the other processes' load than the wall clock does). With no argument the config is the trial of sweeps/tiny.toml at model.base_channels 32
without semantic regularisation (it needs the study's teacher).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere
sys.path.insert(0, str(REPO / "benchmarks"))

from scaling.core.config import Config  # noqa: E402
from scaling.models.factory import load_config  # noqa: E402

STUDY = REPO / "sweeps" / "tiny.toml"
TRIAL = {"model.base_channels": 32, "loss.semantic_weight": 0.0}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default="",
                   help="a TOML file or a shipped name (default: sweeps/tiny.toml's width-32 trial)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per round (default 12)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first in each round (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="platform/bare alternations (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--profile", default="", help="write a cProfile of the platform's last round to this file")
    p.add_argument("--round", choices=("platform", "bare"), help=argparse.SUPPRESS)  # one round, in a child process
    p.add_argument("--scratch", default="", help=argparse.SUPPRESS)
    return p.parse_known_args(argv)  # the rest: --section.key VALUE config overrides


def bench_config(args: argparse.Namespace, overrides: list[str], scratch: Path) -> Config:
    """The trial's config, on a synthetic split and a temporary run directory and MLflow store."""
    from scaling.core.config.loader import parse_overrides

    if args.config:
        cfg = load_config(args.config, overrides)
    else:
        from scaling.sweep.spec import load_sweep

        cfg = load_sweep(STUDY).trial_config(TRIAL, scratch / "run")
        if overrides:
            cfg = load_config(None, _merge(cfg, parse_overrides(overrides)))
    data = _synthetic(cfg, scratch)
    total = args.warmup + args.steps + 1
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, train=str(data / "train"), val=str(data / "val")),
        train=dataclasses.replace(cfg.train, steps=total, val_every=total, ckpt_every=total, progress=False,
                                  device="cpu"),
        tracking=dataclasses.replace(cfg.tracking, uri=f"sqlite:///{scratch / 'mlflow.db'}", parent_run_id=""))
    return cfg


def _merge(cfg: Config, over: dict) -> dict:
    from scaling.core.config.loader import config_to_dict, merge

    return merge(config_to_dict(cfg), over)


def _synthetic(cfg: Config, scratch: Path) -> Path:
    from scaling.data.build import build_synthetic

    return build_synthetic(scratch / "synth", num_classes=10, train=512, val=max(cfg.data.val_samples, 8),
                           size=cfg.data.image_size, seed=0, workers=1, progress=False)


def platform_round(cfg: Config, run: Path, warmup: int, profile: str = "") -> list[tuple[float, float]]:
    """(wall, CPU) seconds per step of one ``train()`` run (a fresh run directory), the warm-up and last step
    left out."""
    import scaling.core.hooks as hooks
    from scaling.train.trainer import train

    starts: list[tuple[float, float]] = []
    original = hooks.trace_samples

    def stamp(rank: int, step: int, indices) -> None:  # first micro-batch of each step
        starts.append((time.perf_counter(), time.process_time()))
        original(rank, step, indices)

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_dir=str(run)))
    hooks.trace_samples = stamp
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        train(cfg)
    finally:
        hooks.trace_samples = original
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
    gaps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(starts, starts[1:])]
    return gaps[warmup:]


def bare_round(cfg: Config, steps: int, warmup: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per step of a plain loop: the model, ``generator_losses``, clipping and AdamW on one
    batch."""
    import train_throughput as tt

    from scaling.train.step import generator_losses  # noqa: F401  (the losses make_step uses)

    torch.manual_seed(cfg.train.seed)
    args = argparse.Namespace(no_fsdp=True, bf16=False)
    model, nets = tt.build(cfg, args, torch.device("cpu"), None)
    if hasattr(model, "init_weights"):
        with torch.no_grad():
            model.init_weights()
    forward_backward, optimiser_step = tt.make_step(cfg, model, nets, False, torch.device("cpu"))
    size = cfg.data.image_size
    x = torch.rand(cfg.train.batch_size, 3, size, size) * 2 - 1
    times = []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        forward_backward(x)
        optimiser_step()
        if i >= warmup:
            times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def ms(times: list[tuple[float, float]], which: int) -> float:
    return 1000 * statistics.median(t[which] for t in times)


def one_round(args: argparse.Namespace, overrides: list[str]) -> int:
    """A child process: one round of ``args.round``, its step times as JSON on the last line of stdout."""
    torch.set_num_threads(args.threads)
    scratch = Path(args.scratch)
    cfg = bench_config(args, overrides, scratch)
    if args.round == "platform":
        runs = sorted(scratch.glob("run-*"))
        times = platform_round(cfg, scratch / f"run-{len(runs)}", args.warmup, args.profile)
    else:
        times = bare_round(cfg, args.steps, args.warmup)
    print(json.dumps(times))
    return 0


def run_round(kind: str, argv: list[str], scratch: Path, profile: str = "") -> list[tuple[float, float]]:
    """One round in a fresh process, as a trial runs: nothing (loader threads, caches, allocator state) carries
    over from the previous round into the next."""
    extra = ["--profile", profile] if profile else []
    proc = subprocess.run([sys.executable, __file__, *argv, "--round", kind, "--scratch", str(scratch), *extra],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"step_overhead: the {kind} round failed:\n{proc.stderr[-3000:]}")
    return [tuple(t) for t in json.loads(proc.stdout.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse_args(argv)
    logging.getLogger("streaming").setLevel(logging.ERROR)  # "directory exists" notes while writing the split
    if args.round:
        return one_round(args, overrides)
    scratch = Path(tempfile.mkdtemp(prefix="step-overhead-"))
    cfg = bench_config(args, overrides, scratch)  # writes the synthetic split the rounds share
    passed = [a for a in argv if a not in ("--profile", args.profile)] if args.profile else argv
    platform: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    for r in range(args.rounds):
        last = r == args.rounds - 1
        p = run_round("platform", passed, scratch, args.profile if last else "")
        b = run_round("bare", passed, scratch)
        platform += p
        bare += b
        print(f"round {r + 1}: platform {ms(p, 0):.1f} ms ({ms(p, 1):.1f} CPU), bare {ms(b, 0):.1f} ms "
              f"({ms(b, 1):.1f} CPU) per step", flush=True)
    m = cfg.model
    print(f"config     {args.config or f'{STUDY.relative_to(REPO)} trial {TRIAL}'}: {m.family} width "
          f"{m.base_channels}, batch {cfg.train.batch_size} at {cfg.data.image_size}px, {args.threads} thread(s), "
          f"torch {torch.__version__}; medians of {len(platform)} and {len(bare)} steps")
    for name, which in (("wall", 0), ("CPU", 1)):
        mp, mb = ms(platform, which), ms(bare, which)
        print(f"{name:<10} platform {mp:.1f} ms, bare {mb:.1f} ms per step: overhead {mp - mb:+.1f} ms "
              f"({100 * (mp / mb - 1):+.1f}%)")
    if args.profile:
        print(f"profile    {args.profile} (the platform's last round; python -m pstats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
