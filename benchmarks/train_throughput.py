"""Training throughput of a preset: images/s, TFLOP/s and MFU per device, peak memory next to the memory
planner's estimate, and the data loader's images/s on its own.

    python benchmarks/train_throughput.py gigatok-b-l --bf16 --compile --ac full --micro-batch 32
    torchrun --nproc-per-node 8 benchmarks/train_throughput.py gigatok-xl-xxl --bf16 --compile --ac full
    python benchmarks/train_throughput.py tiny --steps 3       # the CPU smoke check

The measured step is the trainer's own (``scaling.train.trainer.train_step``): the tokenizer's forward and
backward with every loss of the config (reconstruction, VQ, entropy, LPIPS, the discriminator's generator loss,
semantic regularisation against the frozen teacher), clipping and AdamW, then the discriminator's step, on
the trainables the trainer builds (``build_trainables``: FSDP2, bf16 parameters with ``--bf16``, under bf16
autocast). Where a loss network's weight file is missing, a random-initialised network of the same
architecture stands in (speed does not depend on the weights); the record names them. See
benchmarks/README.md for what each figure means.
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
from scaling.plan import cost  # noqa: E402

GIB = 2**30


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="a TOML file or a shipped name (tiny, gigatok-b-l, gigatok-xl-xxl, ...)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included (default 3)")
    p.add_argument("--micro-batch", type=int, default=0, help="images per device (default: parallel.micro_batch_size, else 8)")
    p.add_argument("--ac", choices=("none", "full", "selective"), default=None,
                   help="activation checkpointing (default: parallel.activation_checkpoint)")
    p.add_argument("--compile", action="store_true", help="torch.compile every Transformer and CNN block and the loss networks")
    p.add_argument("--bf16", action="store_true", help="bf16 compute (FSDP param_dtype and autocast); default fp32")
    p.add_argument("--channels-last", action="store_true", help="parallel.channels_last: NHWC images and conv weights")
    p.add_argument("--losses-off", default="", help="comma list of gan, perceptual, semantic, entropy to switch off")
    p.add_argument("--ablate", action="store_true", help="also time the step without each loss network (the shares)")
    p.add_argument("--profile", default="", help="a folder: torch.profiler over 3 steps, kernel time by kind in the record")
    p.add_argument("--no-fsdp", action="store_true",
                   help="a bare loop: plain module, autocast, one process, no discriminator step (step_overhead.py)")
    p.add_argument("--data", default="", help="an MDS training split for the loader figure (default: a synthetic one, generated)")
    p.add_argument("--workers", type=int, default=-1, help="loader workers (default: data.num_workers, at least min(8, CPUs) on GPU)")
    p.add_argument("--loader-batches", type=int, default=20, help="batches the loader figure times (default 20; 0: no loader figure)")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results.jsonl"), help="JSON lines file to append to")
    return p.parse_known_args(argv)  # the rest: --section.key VALUE config overrides


LOSS_WEIGHTS = {"gan": "gan_weight", "perceptual": "perceptual_weight", "semantic": "semantic_weight",
                "entropy": "entropy_weight"}


def bench_config(args: argparse.Namespace, overrides: list[str]) -> tuple[Config, list[str]]:
    """The config as benchmarked (the trainer's, with the benchmark's parallel settings), and the losses
    switched off by ``--losses-off``."""
    cfg = load_config(args.config, overrides)
    off = sorted(filter(None, args.losses_off.split(",")))
    unknown = [name for name in off if name not in LOSS_WEIGHTS]
    if unknown:
        raise UserError(f"--losses-off: {unknown[0]!r} is not one of {', '.join(LOSS_WEIGHTS)}")
    micro = args.micro_batch or cfg.parallel.micro_batch_size or 8
    if micro < 1:
        raise UserError(f"--micro-batch: must be at least 1, got {micro}")
    parallel = dataclasses.replace(cfg.parallel, micro_batch_size=micro, compile=args.compile,
                                   channels_last=args.channels_last,
                                   activation_checkpoint=args.ac or cfg.parallel.activation_checkpoint)
    loss = dataclasses.replace(cfg.loss, **{LOSS_WEIGHTS[name]: 0.0 for name in off}, gan_start=0)
    train = dataclasses.replace(cfg.train, precision="bf16" if args.bf16 else "fp32")
    return dataclasses.replace(cfg, loss=loss, parallel=parallel, train=train), off


def stand_in_weights(cfg: Config, folder: Path) -> tuple[Config, list[str]]:
    """``cfg`` with every missing loss-network weight file replaced by random weights of the same architecture,
    written to ``folder`` and loaded through the same code as real ones; the stand-ins' names."""
    lc, changes, names = cfg.loss, {}, []
    if lc.perceptual_weight and not Path(lc.vgg_weights).is_file():
        import torchvision

        changes["vgg_weights"] = str(folder / "vgg16-random.pth")
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), changes["vgg_weights"])
        names.append("vgg16 (LPIPS)")
    teachers = [("semantic_teacher", lc.semantic_weight)]
    if lc.gan_weight and lc.disc_kind == "dino":
        teachers.append(("disc_backbone", 1.0))
    for key, weight in teachers:
        path = getattr(lc, f"{key}_weights")
        if weight and not Path(path).is_file():
            import timm
            from safetensors.torch import save_file

            name = getattr(lc, key) if key == "semantic_teacher" else lc.disc_backbone
            changes[f"{key}_weights"] = str(folder / f"{name}-random.safetensors")
            state = timm.create_model(name, pretrained=False, num_classes=0).state_dict()
            save_file({k: v.contiguous() for k, v in state.items()}, changes[f"{key}_weights"])
            names.append(f"{name} ({key.replace('_', ' ')})")
    return dataclasses.replace(cfg, loss=dataclasses.replace(lc, **changes)), names


@dataclasses.dataclass
class Setup:
    device: torch.device
    rank: int
    world_size: int
    close: Callable[[], None]
    runtime: object = None  # the trainer's Runtime (None for the bare loop)


def start(args: argparse.Namespace) -> Setup:
    """The device and ranks: the trainer's runtime (FSDP mesh), or one plain process with --no-fsdp."""
    if args.no_fsdp:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("--no-fsdp: runs one process only; drop it to benchmark several ranks")
        return Setup(torch.device("cuda" if torch.cuda.is_available() else "cpu"), 0, 1, lambda: None)
    from scaling.core.runtime import init_runtime

    rt = init_runtime("auto")
    return Setup(rt.device, rt.rank, rt.world_size, rt.close, rt)


Step = Callable[[torch.Tensor], None]


def trainer_step(cfg: Config, setup: Setup) -> tuple[Step, torch.nn.Module, dict[str, Step]]:
    """The trainer's step on the trainables it builds; the tokenizer; and, for ``--ablate``, the same step
    without each loss network the config uses (name -> step)."""
    from scaling.core.runtime import autocast as runtime_autocast
    from scaling.train.step import FrozenLosses, build_trainables, train_step

    torch.manual_seed(setup.rank)
    t = build_trainables(cfg, setup.runtime, bf16=cfg.train.precision == "bf16")
    frozen = FrozenLosses.build(cfg).to(setup.device, cfg.parallel)
    autocast = runtime_autocast(cfg.train.precision, setup.device)
    gan = t.disc is not None

    def step(x: torch.Tensor, nets: FrozenLosses = frozen, gan_on: bool = gan) -> None:
        train_step(cfg, t, nets, [x], 1, autocast, gan_on)

    without: dict[str, Step] = {}
    if gan:
        without["discriminator"] = lambda x: step(x, gan_on=False)
    if frozen.perceptual is not None:
        without["LPIPS"] = lambda x: step(x, FrozenLosses(None, frozen.semantic))
    if frozen.semantic is not None:
        without["teacher"] = lambda x: step(x, FrozenLosses(frozen.perceptual, None))
    if without:
        without["all three"] = lambda x: step(x, FrozenLosses(), False)
    return step, t.model, without


def bare_step(cfg: Config, args: argparse.Namespace, device: torch.device) -> tuple[Step, torch.nn.Module]:
    """A bare loop (--no-fsdp): the plain model, ``generator_losses``, clipping and AdamW, no discriminator step."""
    model, nets = build(cfg, args, device, None)
    forward_backward, optimiser_step = make_step(cfg, model, nets, args.bf16, device)

    def step(x: torch.Tensor) -> None:
        forward_backward(x)
        optimiser_step()

    return step, model


def build(cfg: Config, args: argparse.Namespace, device: torch.device, mesh: object) -> tuple[torch.nn.Module, dict]:
    """The plain tokenizer and the loss networks for the bare loop (step_overhead.py's baseline)."""
    from scaling.models.factory import build_tokenizer

    with torch.device(device):
        model = build_tokenizer(cfg)
    if cfg.parallel.compile:
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
    """The bare loop's generator step; returns (forward+backward, optimiser step) callables."""
    from scaling.train.step import generator_losses

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


def model_flops(cfg: Config, micro_batch: int) -> dict[str, int]:
    """FLOPs of one step by part (``scaling.plan.count.step_flops``, counted on meta-device twins: the model's
    FLOPs, without checkpointing's recomputation, the MFU convention), for ``micro_batch`` images."""
    from scaling.plan.count import step_flops

    return {part: flops * micro_batch for part, flops in step_flops(cfg).items()}


def executed_flops(step: Step, x: torch.Tensor) -> int | None:
    """FLOPs the real step executes (recomputation included), counted on one step; compiled regions run
    eagerly for it, since the counter sees only eager ops. None when the eager step does not fit in memory
    (it saves more than the compiled one)."""
    stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") \
        else contextlib.nullcontext()
    try:
        with stance, FlopCounterMode(display=False) as counter:
            step(x)
    except torch.OutOfMemoryError:
        print("executed FLOPs: the eager step runs out of memory at this micro-batch; not counted", file=sys.stderr)
        torch.cuda.empty_cache()
        return None
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Step, x: torch.Tensor, steps: int, warmup: int) -> float:
    """Seconds per step over ``steps`` steps after ``warmup`` (peak memory is reset after the warm-up)."""
    for _ in range(warmup):
        step(x)
    sync(x.device)
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x)
    sync(x.device)
    return (time.perf_counter() - t0) / steps


# Kernel (GPU) or op (CPU) names -> kinds, first match wins; matched on the lower-cased name.
KINDS = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient_attention")),
    ("convolution", ("conv", "xmma_fprop", "xmma_dgrad", "xmma_wgrad", "fprop", "dgrad", "wgrad", "implicit",
                     "winograd", "cudnn", "nhwc", "nchw")),
    ("matmul", ("gemm", "nvjet", "cublas", "cutlass", "aten::mm", "aten::addmm", "aten::bmm", "matmul",
                "aten::linear")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "fused_adam")),
    ("norm", ("norm", "moments", "welford")),
    ("compiled (triton)", ("triton",)),
    ("communication", ("nccl", "all_gather", "reduce_scatter", "allreduce")),
    ("copy", ("copy", "memcpy", "memset", "cat", "transpose", "contiguous", "clone", "fill")),
    ("reduction", ("reduce", "sum", "mean", "max", "argmin")),
    ("elementwise", ("elementwise", "vectorized", "unrolled", "mul", "add", "silu", "gelu", "sigmoid")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def profile_step(step: Step, x: torch.Tensor, folder: Path, steps: int = 3) -> dict:
    """torch.profiler over ``steps`` steps: device time per kind of kernel (ms per step), the share of the
    step the device is idle, and the 25 costliest kernels. On the CPU, ops' self time stands in for kernels."""
    from torch.profiler import ProfilerActivity, profile

    cuda = x.device.type == "cuda"
    folder.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]  # kernels only: a small trace
    sync(x.device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step(x)
        sync(x.device)
        wall_ms = 1000 * (time.perf_counter() - t0) / steps
    trace = folder / "trace.json"
    prof.export_chrome_trace(str(trace))
    return summarise_trace(json.loads(trace.read_text()), wall_ms, steps, cuda)


def summarise_trace(trace: dict, wall_ms: float, steps: int, cuda: bool) -> dict:
    """Kernel time by kind from a chrome trace (``kernel`` events on a GPU; top-level ``cpu_op`` self time is
    not separable, so on a CPU every op's duration, nested ones included, is counted: a rough picture)."""
    cats = ("kernel", "gpu_memcpy", "gpu_memset") if cuda else ("cpu_op",)
    events = [e for e in trace["traceEvents"] if e.get("cat") in cats and e.get("ph") == "X"]
    by_kind: dict[str, float] = {}
    by_name: dict[str, float] = {}
    for e in events:
        ms = e["dur"] / 1000 / steps
        by_kind[kind_of(e["name"])] = by_kind.get(kind_of(e["name"]), 0.0) + ms
        by_name[e["name"]] = by_name.get(e["name"], 0.0) + ms
    busy = _union_ms(events) / steps if cuda else None
    return {"wall_ms_per_step": wall_ms, "device_busy_ms_per_step": busy,
            "idle_share": 1 - busy / wall_ms if busy is not None else None,
            "ms_per_step_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "top_kernels": [[name[:120], ms] for name, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[:25]]}


def _union_ms(events: list[dict]) -> float:
    """Milliseconds covered by at least one event (kernels on several streams overlap)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total / 1000


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
    """The device's bf16 dense peak (``scaling.plan.cost``'s table); None on a CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    try:
        return cost.peak_tflops(torch.cuda.get_device_name(device))
    except UserError:
        return None


def measure(cfg: Config, args: argparse.Namespace, setup: Setup, off: list[str], stand_ins: list[str]) -> dict:
    b, size = cfg.parallel.micro_batch_size, cfg.data.image_size
    if args.no_fsdp:
        step, model = bare_step(cfg, args, setup.device)
        without: dict[str, Step] = {}
    else:
        step, model, without = trainer_step(cfg, setup)
    x = (torch.rand(b, 3, size, size, device=setup.device) * 2 - 1).contiguous(
        memory_format=torch.channels_last if cfg.parallel.channels_last else torch.contiguous_format)
    executed = executed_flops(step, x)
    step_s = time_steps(step, x, args.steps, args.warmup)
    memory = peak_memory(setup.device)
    parts = model_flops(cfg, b)
    flops = sum(parts.values())
    ablation = {name: time_steps(fn, x, max(2, args.steps // 2), 2) for name, fn in without.items()} \
        if args.ablate else {}
    prof = profile_step(step, x, Path(args.profile)) if args.profile else None
    loader_ips, workers = loader_throughput(cfg, args, setup) if args.loader_batches else (None, None)
    peak = peak_tflops(setup.device)
    achieved = flops / step_s / 1e12
    planned = planned_memory(cfg, setup)
    measured = memory.get("peak_allocated_bytes")
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else "cpu",
        "torch": torch.__version__, "config": args.config, "world_size": setup.world_size, "micro_batch": b,
        "image_size": size, "ac": cfg.parallel.activation_checkpoint, "compile": cfg.parallel.compile,
        "channels_last": cfg.parallel.channels_last, "float8": cfg.parallel.float8,
        "bf16": args.bf16, "fsdp": not args.no_fsdp and setup.world_size > 1,  # a world of one trains unsharded
        "step": "bare" if args.no_fsdp else "trainer",
        "losses_off": off, "stand_ins": stand_ins, "steps": args.steps, "warmup": args.warmup,
        "params": sum(p.numel() for p in model.parameters()), "step_s": step_s, "images_per_s_per_device": b / step_s,
        "flops_per_image_model": flops / b, "flops_per_image_by_part": {k: v / b for k, v in parts.items()},
        "flops_per_image_executed": executed / b if executed else None,
        "tflops_per_device": achieved, "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "hfu": executed / step_s / 1e12 / peak if peak and executed else None,
        **memory, **planned,
        "measured_over_planned": measured / planned["planned_allocated_bytes"]
        if measured and planned["planned_allocated_bytes"] else None,
        "step_s_without": ablation, "profile": prof,
        "loader_images_per_s": loader_ips, "loader_workers": workers,
    }


def report(r: dict) -> None:
    from scaling.plan.tree import human

    pct = lambda v: f"{100 * v:.1f}%" if v is not None else "n/a"  # noqa: E731
    gib = lambda v: f"{v / GIB:.2f} GiB" if v else "n/a"  # noqa: E731
    print(f"benchmark  {r['config']} on {r['device']} x{r['world_size']}, torch {r['torch']}: {r['step']} step, "
          f"micro-batch {r['micro_batch']} at {r['image_size']}px, ac {r['ac']}, compile {r['compile']}, "
          f"channels-last {r['channels_last']}, bf16 {r['bf16']}, float8 {r['float8']}; "
          f"losses off: {', '.join(r['losses_off']) or 'none'}; random stand-ins: {', '.join(r['stand_ins']) or 'none'}")
    print(f"step       {1000 * r['step_s']:.1f} ms, {r['images_per_s_per_device']:.1f} images/s per device")
    parts = ", ".join(f"{k} {human(v, 'FLOP')}" for k, v in r["flops_per_image_by_part"].items())
    executed = human(r["flops_per_image_executed"], "FLOP") if r["flops_per_image_executed"] else "n/a"
    print(f"FLOPs      {human(r['flops_per_image_model'], 'FLOP')} per image (model: {parts}), "
          f"{executed} executed (recomputation included)")
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
    for name, seconds in r["step_s_without"].items():
        print(f"without    {name}: {1000 * seconds:.1f} ms ({pct(1 - seconds / r['step_s'])} of the step)")
    if r["profile"]:
        prof = r["profile"]
        idle = f", device idle {pct(prof['idle_share'])}" if prof["idle_share"] is not None else ""
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in prof["ms_per_step_by_kind"].items())
        print(f"profile    {prof['wall_ms_per_step']:.1f} ms per step{idle}; ms per step by kind: {kinds}")
    if r["loader_images_per_s"] is not None:
        print(f"data       {r['loader_images_per_s']:.0f} images/s per device from the loader alone "
              f"({r['loader_workers']} workers, augmentation included); the step consumes "
              f"{r['images_per_s_per_device']:.0f}")


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    try:
        cfg, off = bench_config(args, overrides)
        setup = start(args)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-weights-") as folder:
                cfg, stand_ins = stand_in_weights(cfg, Path(folder))
                record = measure(cfg, args, setup, off, stand_ins)
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
