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
    p.add_argument("--with-probe", action="store_true",
                   help="AR-probe, then evaluate, the trained tokenizer afterwards (a dependent job on Slurm; "
                        "needs eval.inception_weights, or the teacher's with eval.fid_features = teacher)")
    p.set_defaults(func=_launch, accepts_overrides=True)

    p = sub.add_parser("status", help="job state, step, last loss, training FLOPs and restarts of runs")
    p.add_argument("paths", nargs="*", type=Path, default=[Path("runs")], help="run directories or roots")
    p.set_defaults(func=_status)

    p = sub.add_parser("cancel", help="stop runs cleanly (checkpoint, no requeue)")
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.set_defaults(func=_cancel)


def _launch(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload

    preload("scaling.models.factory")  # torch, which checking a config needs
    from scaling.launch.profile import load_profile
    from scaling.models.factory import load_config

    cfg = load_config(args.config, args.overrides)
    profile = load_profile(args.profile)
    from scaling.core.run_dir import RunDir

    preload("scaling.launch.submit")
    from scaling.launch.submit import submit

    job = submit(cfg, profile, Path(args.profile).stem, with_probe=args.with_probe)
    run_dir = Path(cfg.train.run_dir)
    print(f"job:            {job.job_id} ({profile.executor})")
    print(f"run directory:  {run_dir}")
    print(f"MLflow run id:  written to {RunDir(run_dir).mlflow_run_id} when the job starts")
    if args.wait:
        result = job.result()
        print(json.dumps(result, indent=2, default=str))
    return 0


def _status(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload

    preload("scaling.launch.status")
    from scaling.launch.status import find_runs, status

    rows = [status(r) for r in find_runs(args.paths)]
    if not rows:
        print(f"no runs under {', '.join(map(str, args.paths))}")
        return 0
    header = ("RUN", "JOB", "EXECUTOR", "STATE", "STEP", "LOSS", "FLOPS", "RESTARTS", "MLFLOW RUN")
    table = [header] + [(str(r.run_dir), r.job_id, r.executor, r.state, "-" if r.step is None else str(r.step),
                         "-" if r.last_loss is None else f"{r.last_loss:.4f}",
                         "-" if r.flops is None else f"{r.flops:.3g}", str(r.restarts), r.mlflow_run)
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from scaling.launch.status import cancel

    for run_dir in args.run_dirs:
        print(f"{run_dir}: {cancel(run_dir)}")
    return 0
