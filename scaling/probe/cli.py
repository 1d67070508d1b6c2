"""``scaling probe RUN [--probe.key VALUE ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="AR-probe a trained tokenizer: cache its tokens, train a class-conditional GPT, "
                                     "measure generation",
                       description="GigaTok's AR probe of RUN's tokenizer (its latest checkpoint): encode the train "
                                   "and val splits into token shards, train a class-conditional GPT on them, then "
                                   "report AR validation loss, gFID (a CFG-scale search) and linear-probe accuracy "
                                   "into the tokenizer's MLflow run under probe/. Overrides: probe.*, eval.*, "
                                   "tracking.uri, train.device. Re-running resumes; a finished probe does no work.")
    p.add_argument("run", type=Path, help="a tokenizer run directory")
    p.set_defaults(func=_probe, accepts_overrides=True)


def _probe(args: argparse.Namespace) -> int:
    from scaling.core.run_dir import RunDir
    from scaling.core.startup import preload
    from scaling.tracking.mlflow_tracker import IMPORTS

    preload("scaling.probe.run", *IMPORTS)
    from scaling.probe.run import run_probe

    results = run_probe(args.run, args.overrides)
    if results:
        width = max(map(len, results))
        print("\n".join(f"{k:<{width}}  {v:.4g}" for k, v in results.items()))
    print(f"probe: {RunDir(args.run).probe.root}")
    return 0
