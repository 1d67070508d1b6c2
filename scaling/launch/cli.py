"""``scaling launch CONFIG --profile slurm/X.toml [overrides]``: check on the login node, then submit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="submit a training job (Slurm or local) through submitit",
                       description="Validate the config, data, weights and profile, then submit. Re-launching "
                                   "the same run directory resumes it.")
    p.add_argument("config")
    p.add_argument("--profile", default="slurm/local.toml", help="cluster profile TOML (default: slurm/local.toml)")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    p.set_defaults(func=_launch, accepts_overrides=True)


def _launch(args: argparse.Namespace) -> int:
    from scaling.config import load_config
    from scaling.launch.profile import load_profile

    cfg = load_config(args.config, args.overrides)
    profile = load_profile(args.profile)
    from scaling.launch.submit import submit

    job = submit(cfg, profile, Path(args.profile).stem)
    run_dir = Path(cfg.train.run_dir)
    print(f"job:            {job.job_id} ({profile.executor})")
    print(f"run directory:  {run_dir}")
    print(f"MLflow run id:  written to {run_dir / 'mlflow_run_id'} when the job starts")
    if args.wait:
        result = job.result()
        print(json.dumps(result, indent=2, default=str))
    return 0
