"""``scaling sweep run|status|cancel SWEEP``: a sweep file's study, its trials' jobs and their state."""

from __future__ import annotations

import argparse

from scaling.core.cli_args import positive


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="scaling grids and Optuna searches, one job per trial",
                       description="Run, inspect or cancel a sweep (sweeps/*.toml). Re-running 'run' resumes it.")
    actions = p.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="create or continue the study; launch trials until all are told")
    run.add_argument("sweep", help="a sweep TOML file")
    run.add_argument("--poll", type=positive(float), default=5.0, help="seconds between looks at the jobs (default 5)")
    run.add_argument("--dry-run", action="store_true", help="print the planned cost per trial and in total, queue nothing")
    run.set_defaults(func=_run)
    status = actions.add_parser("status", help="a table of the trials: params, state, step, objective, job")
    status.add_argument("sweep")
    status.set_defaults(func=_status)
    cancel = actions.add_parser("cancel", help="stop the driver and the running trials' jobs (trials: FAIL, cancelled)")
    cancel.add_argument("sweep")
    cancel.set_defaults(func=_cancel)


def _run(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload

    preload("scaling.sweep.driver", "scaling.sweep.prepare")
    from scaling.sweep.budget import plan_sweep
    from scaling.sweep.prepare import prepare_data, prepare_teacher
    from scaling.sweep.driver import run_sweep
    from scaling.sweep.spec import load_sweep

    spec = load_sweep(args.sweep)
    plan_sweep(spec)  # the planned cost; a sweep over its budget stops here
    if args.dry_run:
        return 0
    prepare_data(spec)  # a [study] section's data and teacher, which its trials train with; skipped when made
    prepare_teacher(spec)
    run_sweep(spec, poll_s=args.poll)
    return 0


def _status(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload

    preload("scaling.sweep.driver")
    from scaling.sweep.driver import trial_rows
    from scaling.sweep.spec import load_sweep

    spec = load_sweep(args.sweep)
    rows = trial_rows(spec)
    header = ("TRIAL", "PARAMS", "STATE", "STEP", spec.objective.metric.upper(), "FLOPS", "JOB")
    table = [header] + [(str(r.number), r.params, r.state, "-" if r.step is None else str(r.step),
                         "-" if r.value is None else f"{r.value:.4g}", "-" if r.flops is None else f"{r.flops:.3g}",
                         r.job_id) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"training FLOPs, all trials: {sum(r.flops for r in rows if r.flops is not None):.3g}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload

    preload("scaling.sweep.driver")
    from scaling.sweep.driver import cancel_sweep
    from scaling.sweep.spec import load_sweep

    for line in cancel_sweep(load_sweep(args.sweep)) or ["no running trials"]:
        print(line)
    return 0
