"""``scaling probe RUN [--probe.key VALUE ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="generation-probe a trained tokenizer: cache its tokens, train a class-"
                                     "conditional generator (AR GPT, rectified flow), measure generation",
                       description="Generation probes of RUN's tokenizer (its latest checkpoint), each kind in "
                                   "probe.kinds (default: ar for code ids, flow for continuous tokens): encode the "
                                   "train and val splits into token shards (code ids, or latents for flow), train a "
                                   "class-conditional generator on them (GigaTok's AR GPT; a SiT-style rectified "
                                   "flow), then report its validation loss, gFID (a CFG-scale search) and linear-"
                                   "probe accuracy into the tokenizer's MLflow run under probe/ (ar) or flow/. "
                                   "Overrides: probe.*, eval.*, tracking.uri, train.device. Re-running resumes; a "
                                   "finished probe does no work.")
    p.add_argument("run", type=Path, help="a tokenizer run directory")
    p.set_defaults(func=_probe, accepts_overrides=True)


def _probe(args: argparse.Namespace) -> int:
    from scaling.core.config.schema import probe_kinds
    from scaling.core.run_dir import RunDir, load_run_config
    from scaling.core.startup import preload
    from scaling.tracking.mlflow_tracker import IMPORTS

    preload("scaling.probe.run", *IMPORTS)
    from scaling.probe.run import MAY_CHANGE, run_probe

    results = run_probe(args.run, args.overrides)
    if results:
        width = max(map(len, results))
        print("\n".join(f"{k:<{width}}  {v:.4g}" for k, v in results.items()))
    for kind in probe_kinds(load_run_config(args.run, args.overrides, MAY_CHANGE)):
        print(f"{kind} probe: {RunDir(args.run).probe_dir(kind).root}")
    return 0
