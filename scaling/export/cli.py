"""``scaling export RUN [--step N] [--out FILE]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's generator (and EMA) as one safetensors file",
                       description="Consolidate RUN's sharded checkpoint (the latest, or --step) into one "
                                   "safetensors file of full tensors: the generator, its EMA under 'ema.', and "
                                   "the resolved config in the metadata. Default: RUN/export/generator.safetensors.")
    p.add_argument("run", type=Path, help="a run directory")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--out", type=Path, default=None, help="output file")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload

    preload("scaling.export.generator")
    from scaling.export.generator import export_generator

    out = export_generator(args.run, args.out, args.step)
    print(f"exported: {out}")
    return 0
