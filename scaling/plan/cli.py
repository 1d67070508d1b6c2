"""``scaling plan CONFIG [--json] [--section.key VALUE ...]``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaling.config import Config

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
    p.set_defaults(func=_plan, accepts_overrides=True)


def _plan(args: argparse.Namespace) -> int:
    from scaling.config import load_config

    cfg = load_config(args.config, args.overrides)
    from scaling.plan.count import plan
    from scaling.plan.tree import human, module_tree

    result = plan(cfg)
    params = {k.removeprefix("params_"): v for k, v in result.params.items()}
    if args.json:
        print(json.dumps({"config": args.config, "family": cfg.model.family, "image_size": cfg.data.image_size,
                          "params_total": params["total"], "params": params,
                          "flops_forward_per_image": result.flops_forward, "flops_per_image": result.flops_per_image}))
        return 0
    print(f"config      {args.config}: {_describe(cfg)}")
    print("parameters")
    for key, label in LABELS.items():
        print(f"  {label:<22}{human(params[key]):>10}")
    print(f"  {'total':<22}{human(params['total']):>10}")
    print(f"FLOPs per {cfg.data.image_size}x{cfg.data.image_size} image (matmuls, convolutions, attention; "
          "no LPIPS, discriminator or teacher)")
    print(f"  {'forward':<22}{human(result.flops_forward, 'FLOP'):>10}")
    print(f"  {'forward + backward':<22}{human(result.flops_per_image, 'FLOP'):>10}")
    print("model")
    for line in module_tree(result.model, args.depth):
        print(f"  {line}")
    return 0


def _describe(cfg: Config) -> str:
    from scaling.config.schema import TRANSFORMER_SIZES

    m, q = cfg.model, cfg.quantizer
    vq = f"VQ {q.codebook_size} x {q.code_dim}"
    if m.family != "gigatok":
        return f"{m.family}, {m.downsample}x downsampling, {vq}"
    enc, dec = (TRANSFORMER_SIZES[s] for s in (m.encoder_size, m.decoder_size))
    tokens = f"{m.num_tokens} 1D tokens{' (causal)' if m.causal else ''}" if m.layout == "1d" else "2D tokens"
    return (f"gigatok {m.layout}, encoder {m.encoder_size} {enc[0]}x{enc[1]}, decoder {m.decoder_size} "
            f"{dec[0]}x{dec[1]} (width x layers), {tokens}, {vq}")
