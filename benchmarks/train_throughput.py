"""Training throughput of a preset: images/s, TFLOP/s and MFU per device, peak memory next to the memory
planner's estimate, and the data loader's images/s on its own.

    python benchmarks/train_throughput.py gigatok-b-l --bf16 --compile --ac full --micro-batch 32
    torchrun --nproc-per-node 8 benchmarks/train_throughput.py gigatok-xl-xxl --bf16 --compile --ac full
    python benchmarks/train_throughput.py tiny --steps 3       # the CPU smoke check

The measured step is the generator's: tokenizer forward and backward with the config's losses and an
AdamW step, sharded by ``parallelize_tokenizer`` (FSDP2, bf16 parameters with ``--bf16``, under bf16
autocast). LPIPS and the semantic teacher join only when their weight files exist, the discriminator's
generator loss only with ``--gan``. See benchmarks/README.md for what each figure means.
Only what the step needs is imported: no mlflow, submitit, optuna, timm or lpips unless asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from scaling.core.config import Config  # noqa: E402
from scaling.core.errors import UserError  # noqa: E402
from scaling.models.factory import load_config  # noqa: E402

# bf16 dense peak per device, TFLOP/s (NVIDIA datasheets, SXM parts, no sparsity)
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
GIB = 2**30


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="a TOML file or a shipped name (tiny, gigatok-b-l, gigatok-xl-xxl, ...)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included (default 3)")
    p.add_argument("--micro-batch", type=int, default=0, help="images per device (default: parallel.micro_batch_size, else 8)")
    p.add_argument("--ac", choices=("none", "full", "selective"), default=None,
                   help="activation checkpointing (default: parallel.activation_checkpoint)")
    p.add_argument("--compile", action="store_true", help="torch.compile every Transformer and CNN block")
    p.add_argument("--bf16", action="store_true", help="bf16 compute (FSDP param_dtype and autocast); default fp32")
    p.add_argument("--channels-last", action="store_true", help="NHWC images (cuDNN's faster convolution layout)")
    p.add_argument("--gan", action="store_true", help="include the discriminator's generator loss (as after gan_start)")
    p.add_argument("--no-fsdp", action="store_true", help="plain module and autocast, one process (no parallelize_tokenizer)")
    p.add_argument("--data", default="", help="an MDS training split for the loader figure (default: a synthetic one, generated)")
    p.add_argument("--workers", type=int, default=-1, help="loader workers (default: data.num_workers, at least min(8, CPUs) on GPU)")
    p.add_argument("--loader-batches", type=int, default=20, help="batches the loader figure times (default 20)")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results.jsonl"), help="JSON lines file to append to")
    return p.parse_known_args(argv)  # the rest: --section.key VALUE config overrides


def bench_config(args: argparse.Namespace, overrides: list[str]) -> tuple[Config, list[str]]:
    """The config as benchmarked, and the losses switched off (no weight file, or GAN without --gan)."""
    cfg = load_config(args.config, overrides)
    lc, off = cfg.loss, {}
    if lc.perceptual_weight and not Path(lc.vgg_weights).is_file():
        off["perceptual_weight"] = 0.0
    if lc.semantic_weight and not Path(lc.semantic_teacher_weights).is_file():
        off["semantic_weight"] = 0.0
    if lc.gan_weight and not args.gan:
        off["gan_weight"] = 0.0
    micro = args.micro_batch or cfg.parallel.micro_batch_size or 8
    if micro < 1:
        raise UserError(f"--micro-batch: must be at least 1, got {micro}")
    parallel = dataclasses.replace(cfg.parallel, micro_batch_size=micro, compile=args.compile,
                                   activation_checkpoint=args.ac or cfg.parallel.activation_checkpoint)
    loss = dataclasses.replace(lc, **off)
    return dataclasses.replace(cfg, loss=loss, parallel=parallel), sorted(k.removesuffix("_weight") for k in off)


@dataclasses.dataclass
class Setup:
    device: torch.device
    rank: int
    world_size: int
    close: Callable[[], None]


def start(args: argparse.Namespace) -> tuple[Setup, object]:
    """The device and ranks, and the FSDP mesh (None with --no-fsdp)."""
    if args.no_fsdp:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("--no-fsdp: runs one process only; drop it to benchmark several ranks")
        return Setup(torch.device("cuda" if torch.cuda.is_available() else "cpu"), 0, 1, lambda: None), None
    from scaling.core.runtime import init_runtime

    rt = init_runtime("auto")
    return Setup(rt.device, rt.rank, rt.world_size, rt.close), rt.mesh


def build(cfg: Config, args: argparse.Namespace, device: torch.device, mesh: object) -> tuple[torch.nn.Module, dict]:
    """The tokenizer (sharded unless --no-fsdp) and the loss networks the step uses."""
    from scaling.models.factory import build_tokenizer

    with torch.device(device):
        model = build_tokenizer(cfg)
    if not args.no_fsdp:
        from scaling.parallel.parallelize import parallelize_tokenizer

        dtype = torch.bfloat16 if args.bf16 else torch.float32
        model = parallelize_tokenizer(model, cfg.parallel, mesh, param_dtype=dtype)
    elif cfg.parallel.compile:
        from scaling.parallel.parallelize import apply_compile

        apply_compile(model)
    nets: dict = {}
    if cfg.loss.perceptual_weight:
        from scaling.losses.perceptual import PerceptualLoss

        nets["perceptual"] = PerceptualLoss(cfg.loss.vgg_weights, cfg.loss.lpips_weights).to(device)
    if cfg.loss.semantic_weight:
        from scaling.losses.semantic import SemanticLoss

        nets["semantic"] = SemanticLoss(cfg.loss).to(device)
    if cfg.loss.gan_weight:
        from scaling.losses.gan import PatchDiscriminator

        nets["disc"] = PatchDiscriminator(cfg.loss.disc_layers, cfg.loss.disc_channels).to(device)
    return model, nets


def make_step(cfg: Config, model: torch.nn.Module, nets: dict, bf16: bool, device: torch.device):
    """One generator step, as the trainer takes it; returns (forward+backward, optimiser step) callables."""
    from scaling.train.trainer import generator_losses

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    temperature = cfg.loss.entropy_temperature if cfg.loss.entropy_weight else None
    semantic = nets.get("semantic")

    def forward_backward(x: torch.Tensor) -> None:
        with autocast:
            recon, q, *student = model(x, temperature, semantic=True) if semantic else model(x, temperature)
            losses = generator_losses(cfg, x, recon, q, nets.get("perceptual"), nets.get("disc"), semantic, *student)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()

    def optimiser_step() -> None:
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()

    return forward_backward, optimiser_step


def model_flops(cfg: Config, micro_batch: int) -> int:
    """FLOPs of one step's forward and backward, counted by FlopCounterMode on a meta-device twin: the
    model's FLOPs, without activation-checkpointing recomputation (the MFU convention)."""
    from scaling.plan.count import meta_model
    from scaling.plan.memory import loss_networks, training_loss

    model, extras = meta_model(cfg), loss_networks(cfg)
    with FlopCounterMode(display=False) as counter:
        training_loss(cfg, model, extras, micro_batch).backward()
    return counter.get_total_flops()


def executed_flops(forward_backward, x: torch.Tensor) -> int:
    """FLOPs the real step executes (recomputation included), counted on one step; compiled blocks run
    eagerly for it, since the counter sees only eager ops."""
    stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") \
        else contextlib.nullcontext()
    with stance, FlopCounterMode(display=False) as counter:
        forward_backward(x)
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(forward_backward, optimiser_step, x: torch.Tensor, steps: int, warmup: int) -> float:
    """Seconds per step over ``steps`` steps after ``warmup`` (peak memory is reset after the warm-up)."""
    for _ in range(warmup):
        forward_backward(x)
        optimiser_step()
    sync(x.device)
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        forward_backward(x)
        optimiser_step()
    sync(x.device)
    return (time.perf_counter() - t0) / steps


def peak_memory(device: torch.device) -> dict[str, int]:
    if device.type == "cuda":
        return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved(device)}
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # Linux: KiB


def loader_throughput(cfg: Config, args: argparse.Namespace, setup: Setup) -> tuple[float, int]:
    """Images/s of the real StreamingDataLoader plus augmentation alone, and the workers it used."""
    from scaling.data.loader import augment, sample_seeds, train_loader

    workers = args.workers if args.workers >= 0 else cfg.data.num_workers
    if setup.device.type == "cuda" and args.workers < 0:
        workers = max(workers, min(8, os.cpu_count() or 1))
    batch, scratch = cfg.parallel.micro_batch_size, Path(tempfile.mkdtemp(prefix="bench-data-"))
    split = args.data or str(_synthetic_split(cfg, args, setup, scratch))
    data = dataclasses.replace(cfg.data, train=split, num_workers=workers)
    loader = train_loader(data, batch, cfg.train.seed, scratch / "cache")
    images, t0 = 0, None
    while images < args.loader_batches * batch:
        for raw, _, indices in loader:
            augment(raw, data, sample_seeds(cfg.train.seed, 0, indices))
            if t0 is None:  # the first batch pays for worker start-up
                t0 = time.perf_counter()
                continue
            images += len(raw)
            if images >= args.loader_batches * batch:
                break
    return images / (time.perf_counter() - t0), workers


def _synthetic_split(cfg: Config, args: argparse.Namespace, setup: Setup, scratch: Path) -> Path:
    """A synthetic MDS split at the config's image size, one epoch = the batches timed (plus one)."""
    from scaling.data.build import build_synthetic

    count = (args.loader_batches + 1) * cfg.parallel.micro_batch_size * setup.world_size
    root = Path(os.environ.get("BENCH_DATA_DIR", tempfile.gettempdir())) / f"bench-synth-{cfg.data.image_size}-{count}"
    if setup.rank == 0:
        build_synthetic(root, num_classes=10, train=count, val=8, size=cfg.data.image_size, seed=0,
                        workers=min(8, os.cpu_count() or 1), progress=False)
    if setup.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    return root / "train"


def planned_memory(cfg: Config, setup: Setup) -> dict[str, int | None]:
    """The planner's per-device estimate for the benchmarked configuration (AC none or full)."""
    from scaling.plan.count import meta_model
    from scaling.plan.memory import plan_memory

    ac = cfg.parallel.activation_checkpoint
    if ac not in ("none", "full"):
        return {"planned_allocated_bytes": None, "planned_total_bytes": None}
    mem = torch.cuda.get_device_properties(setup.device).total_memory / GIB if setup.device.type == "cuda" else 80.0
    plan = plan_memory(cfg, meta_model(cfg), setup.world_size, mem, cfg.parallel.micro_batch_size)
    return {"planned_allocated_bytes": plan.allocated(ac, plan.micro_batch),
            "planned_total_bytes": plan.total(ac, plan.micro_batch)}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def measure(cfg: Config, args: argparse.Namespace, setup: Setup, mesh: object, off: list[str]) -> dict:
    b, size = cfg.parallel.micro_batch_size, cfg.data.image_size
    torch.manual_seed(setup.rank)
    model, nets = build(cfg, args, setup.device, mesh)
    forward_backward, optimiser_step = make_step(cfg, model, nets, args.bf16, setup.device)
    x = torch.rand(b, 3, size, size, device=setup.device) * 2 - 1
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    executed = executed_flops(forward_backward, x)
    optimiser_step()
    step_s = time_steps(forward_backward, optimiser_step, x, args.steps, args.warmup)
    memory = peak_memory(setup.device)
    flops = model_flops(cfg, b)
    loader_ips, workers = loader_throughput(cfg, args, setup)
    peak = peak_tflops(setup.device)
    achieved = flops / step_s / 1e12
    planned = planned_memory(cfg, setup)
    measured = memory.get("peak_allocated_bytes")
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else "cpu",
        "torch": torch.__version__, "config": args.config, "world_size": setup.world_size, "micro_batch": b,
        "image_size": size, "ac": cfg.parallel.activation_checkpoint, "compile": cfg.parallel.compile,
        "channels_last": args.channels_last,
        "bf16": args.bf16, "fsdp": not args.no_fsdp, "losses_off": off, "steps": args.steps, "warmup": args.warmup,
        "params": sum(p.numel() for p in model.parameters()), "step_s": step_s, "images_per_s_per_device": b / step_s,
        "flops_per_image_model": flops / b, "flops_per_image_executed": executed / b,
        "tflops_per_device": achieved, "peak_tflops": peak,
        "mfu": achieved / peak if peak else None, "hfu": executed / step_s / 1e12 / peak if peak else None,
        **memory, **planned,
        "measured_over_planned": measured / planned["planned_allocated_bytes"]
        if measured and planned["planned_allocated_bytes"] else None,
        "loader_images_per_s": loader_ips, "loader_workers": workers,
    }
    return record


def report(r: dict) -> None:
    from scaling.plan.tree import human

    pct = lambda v: f"{100 * v:.1f}%" if v is not None else "n/a"  # noqa: E731
    gib = lambda v: f"{v / GIB:.2f} GiB" if v else "n/a"  # noqa: E731
    print(f"benchmark  {r['config']} on {r['device']} x{r['world_size']}, torch {r['torch']}: micro-batch "
          f"{r['micro_batch']} at {r['image_size']}px, ac {r['ac']}, compile {r['compile']}, bf16 {r['bf16']}, "
          f"fsdp {r['fsdp']}; losses off: {', '.join(r['losses_off']) or 'none'}")
    print(f"step       {1000 * r['step_s']:.1f} ms, {r['images_per_s_per_device']:.1f} images/s per device")
    print(f"FLOPs      {human(r['flops_per_image_model'], 'FLOP')} per image (model), "
          f"{human(r['flops_per_image_executed'], 'FLOP')} executed (recomputation included)")
    print(f"achieved   {human(r['tflops_per_device'] * 1e12, 'FLOP/s')} per device; MFU {pct(r['mfu'])}, "
          f"HFU {pct(r['hfu'])} (bf16 dense peak {r['peak_tflops'] or 'n/a'} TFLOP/s)")
    if "peak_allocated_bytes" in r:
        ratio = r["measured_over_planned"]
        print(f"memory     peak {gib(r['peak_allocated_bytes'])} allocated, {gib(r['peak_reserved_bytes'])} reserved; "
              f"planner {gib(r['planned_allocated_bytes'])} allocated (measured/planned "
              f"{f'{ratio:.2f}' if ratio else 'n/a'}), {gib(r['planned_total_bytes'])} with its allowance")
    else:
        print(f"memory     peak RSS {gib(r['peak_rss_bytes'])} (CPU); planner {gib(r['planned_allocated_bytes'])} "
              "for a GPU (not comparable)")
    print(f"data       {r['loader_images_per_s']:.0f} images/s per device from the loader alone "
          f"({r['loader_workers']} workers, augmentation included); the step consumes "
          f"{r['images_per_s_per_device']:.0f}")


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    try:
        cfg, off = bench_config(args, overrides)
        setup, mesh = start(args)
        try:
            record = measure(cfg, args, setup, mesh, off)
        finally:
            setup.close()
    except UserError as e:
        print(f"train_throughput: error: {e}", file=sys.stderr)
        return 2
    if setup.rank == 0:
        report(record)
        results = Path(args.results)
        results.parent.mkdir(parents=True, exist_ok=True)
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
