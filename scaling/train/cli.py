"""``scaling train CONFIG [--section.key value ...]``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a tokenizer (re-running resumes)",
                       description="Train a tokenizer. CONFIG is a TOML file or a shipped config name "
                                   "(e.g. tiny). Override any key with --section.key VALUE.")
    p.add_argument("config")
    p.set_defaults(func=_train, accepts_overrides=True)


def _train(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload
    from scaling.tracking.mlflow_tracker import IMPORTS

    preload("scaling.models.factory")  # torch, which checking a config needs
    from scaling.models.factory import load_config

    cfg = load_config(args.config, args.overrides)
    preload("scaling.train.trainer", *IMPORTS)  # the trainer's imports only once the config is valid
    from scaling.train.trainer import train

    result = train(cfg)
    if result.rank:  # rank 0 reports for all
        return 0
    from scaling.core.run_dir import RunDir
    from scaling.tracking.mlflow_tracker import tracking_uri

    uri = tracking_uri(cfg.tracking) or "sqlite:///mlflow.db"
    print(f"run directory:   {result.run_dir}")
    print(f"reconstructions: {RunDir(result.run_dir).reconstructions}")
    print(f"MLflow run:      {result.run_id} (experiment {cfg.tracking.experiment!r}, store {uri})")
    print(f"  browse it:     mlflow ui --backend-store-uri {uri}")
    if result.val:
        v = result.val
        used = (f"codebook usage {v['val/codebook_usage']:.1%}" if "val/codebook_usage" in v
                else f"latent std {v['val/latent_std']:.3f}")
        print(f"validation:      PSNR {v['val/psnr']:.2f} dB, {used}")
    return 0
