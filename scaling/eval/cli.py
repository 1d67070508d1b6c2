"""``scaling eval RUN [--step N] [--ema/--no-ema] [--eval.key VALUE ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="reconstruction metrics of a run's tokenizer on the validation split",
                       description="Reconstruct the validation split with RUN's tokenizer (the newest checkpoint, "
                                   "or --step; its EMA weights when it keeps an EMA, unless --no-ema) and report "
                                   "rFID, PSNR, SSIM, LPIPS, codebook usage and perplexity, and the distances of "
                                   "encoder outputs to their codes. Logged to the run's MLflow run at the "
                                   "checkpoint's step and written to RUN/eval/step-N/. Override eval.* keys with "
                                   "--eval.key VALUE (e.g. --eval.inception_weights FILE --eval.num_images 10000).")
    p.add_argument("run", type=Path, help="a run directory")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate the EMA weights when the run keeps them (default: yes)")
    p.set_defaults(func=_eval, accepts_overrides=True)


def _eval(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload
    from scaling.tracking.mlflow_tracker import IMPORTS

    preload("scaling.eval.reconstruction", *IMPORTS)
    from scaling.eval.reconstruction import LPIPS_SKIPPED, evaluate

    metrics = evaluate(args.run, args.overrides, args.step, args.ema)
    prefix = next(iter(metrics)).split("/")[0]
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.4f}" if key != f"{prefix}/num_images" else f"{key:<{width}}  {value:.0f}")
    if f"{prefix}/lpips" not in metrics:
        print(f"{prefix + '/lpips':<{width}}  {LPIPS_SKIPPED}")
    return 0
