"""``scaling plan CONFIG [--json] [--section.key VALUE ...]``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from scaling.core.cli_args import positive

if TYPE_CHECKING:
    from scaling.plan.memory import MemoryPlan

LABELS = {"encoder_cnn": "encoder CNN", "encoder_transformer": "encoder transformer", "quantizer": "quantiser",
          "decoder_transformer": "decoder transformer", "decoder_cnn": "decoder CNN",
          "semantic_mlp": "semantic MLP"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="parameters per component, FLOPs per image and the model tree of a config",
                       description="Build CONFIG's tokenizer on the meta device (no memory, any size) and print "
                                   "its parameters per component, forward+backward FLOPs per image and its "
                                   "module tree. CONFIG is a TOML file or a shipped name (e.g. gigatok-b-l).")
    p.add_argument("config")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the text report")
    p.add_argument("--depth", type=int, default=3, help="levels of the module tree to show (default 3)")
    p.add_argument("--gpus", type=positive(int), default=1, help="GPUs the parameters are fully sharded over (default 1)")
    p.add_argument("--gpu-mem", type=positive(float), default=80.0, help="memory per GPU in GiB (default 80)")
    p.add_argument("--micro-batch", type=int, default=0,
                   help="images per GPU per forward (default: parallel.micro_batch_size, else "
                        "train.batch_size / --gpus)")
    p.set_defaults(func=_plan, accepts_overrides=True)


def _plan(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload

    preload("scaling.models.factory", "scaling.plan.count", "scaling.plan.memory")
    from scaling.models.factory import FAMILIES, bottleneck, load_config

    cfg = load_config(args.config, args.overrides)
    from scaling.plan.cost import planned_run
    from scaling.plan.count import plan
    from scaling.plan.tree import human, module_tree

    result = plan(cfg)
    params = {k.removeprefix("params_"): v for k, v in result.params.items()}
    from scaling.plan.memory import check_fits, plan_memory

    micro_batch = args.micro_batch or cfg.parallel.micro_batch_size or max(1, cfg.train.batch_size // args.gpus)
    memory = plan_memory(cfg, result.model, args.gpus, args.gpu_mem, micro_batch)
    check_fits(memory)
    run_steps, run_total = planned_run(cfg, result.flops_by_part)
    latent = bottleneck(cfg, result.model)
    if args.json:
        print(json.dumps({"config": args.config, "family": cfg.model.family, "image_size": cfg.data.image_size,
                          "params_total": params["total"], "params": params,
                          "flops_forward_per_image": result.flops_forward, "flops_per_image": result.flops_per_image,
                          "flops_per_training_image": result.flops_per_training_image,
                          "flops_by_part": result.flops_by_part, "run_steps": run_steps, "run_flops": run_total,
                          "memory": memory.to_dict(), "bottleneck": latent}))
        return 0
    print(f"config      {args.config}: {FAMILIES[cfg.model.family].describe(cfg)}")
    bits = f", {latent['bottleneck_bits']} bits" if "bottleneck_bits" in latent else ""
    print(f"bottleneck  {latent['bottleneck_tokens']} tokens x {latent['bottleneck_channels']} channels "
          f"({latent['bottleneck_floats']} floats{bits}) per image")
    print("parameters")
    for key, label in LABELS.items():
        print(f"  {label:<22}{human(params[key]):>10}")
    print(f"  {'total':<22}{human(params['total']):>10}")
    print(f"FLOPs per {cfg.data.image_size}x{cfg.data.image_size} image (matmuls, convolutions, attention; "
          "no LPIPS, discriminator or teacher)")
    print(f"  {'forward':<22}{human(result.flops_forward, 'FLOP'):>10}")
    print(f"  {'forward + backward':<22}{human(result.flops_per_image, 'FLOP'):>10}")
    print("FLOPs per training image, the loss networks included (what a run logs as train/flops)")
    for part, flops in result.flops_by_part.items():
        print(f"  {PART_LABELS[part]:<22}{human(flops, 'FLOP'):>10}")
    print(f"  {'total':<22}{human(result.flops_per_training_image, 'FLOP'):>10}")
    source = f"bought by train.flops_budget {cfg.train.flops_budget:.3g}" if cfg.train.flops_budget else "train.steps"
    print(f"training run: {run_steps} steps ({source}) of {cfg.train.batch_size} images, {human(run_total, 'FLOP')}")
    for line in _memory_lines(memory):
        print(line)
    print("model")
    for line in module_tree(result.model, args.depth):
        print(f"  {line}")
    return 0


PART_LABELS = {"tokenizer": "tokenizer", "lpips": "LPIPS", "teacher": "teacher (forward)",
               "discriminator": "discriminator"}
EXTRA_LABELS = {"lpips": "LPIPS VGG16 (frozen)", "teacher": "semantic teacher (frozen)",
                "discriminator": "discriminator (+grads, AdamW)"}


def _memory_lines(m: MemoryPlan) -> list[str]:
    from scaling.plan.memory import GIB, OVERHEAD_GIB
    from scaling.plan.tree import human

    def gib(n: float) -> str:
        return f"{n / GIB:10.2f}"

    lines = [f"memory per GPU, GiB (FSDP2 full sharding over {m.gpus} GPU{'s' if m.gpus > 1 else ''}; bf16 compute, "
             "fp32 master weights and gradients, AdamW)",
             f"  {'sharded state':<30}{'params':>10}{'grads':>10}{'optimiser':>10}{'total':>10}"]
    for key, parts in m.state.items():
        lines.append(f"  {LABELS[key]:<30}" + "".join(gib(v) for v in parts.values()) + gib(sum(parts.values())))
    lines.append(f"  {'total':<30}{'':>30}{gib(m.state_total())}")
    for key, n in m.extras.items():
        lines.append(f"  {EXTRA_LABELS[key] + ', replicated':<60}{gib(n)}")
    gathered = f"gathered bf16 (root {human(m.root_unit)}, unit {human(m.largest_unit)})"
    lines += [f"  {gathered:<60}{gib(m.gathered)}",
              f"  {'CUDA context, fragmentation':<60}{gib(OVERHEAD_GIB * GIB)}",
              f"  {'activations':<30}{'no checkpointing':>20}{'full checkpointing':>20}"]
    rows = [("per image", lambda ac: m.activations[ac].per_image),
            (f"at micro-batch {m.micro_batch}", lambda ac: m.activations[ac].at(m.micro_batch)),
            (f"total at micro-batch {m.micro_batch}", lambda ac: m.total(ac, m.micro_batch))]
    for label, value in rows:
        lines.append(f"  {label:<30}" + "".join(f"{value(ac) / GIB:20.2f}" for ac in ("none", "full")))
    lines.append(f"  {f'largest micro-batch in {m.gpu_mem_gib:g} GiB':<30}"
                 + "".join(f"{m.suggest(ac):20d}" for ac in ("none", "full")))
    return lines

