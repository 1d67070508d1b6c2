"""``scaling study SWEEP``: data, teacher, sweep (trained, probed, evaluated), fits and report, resumable."""

from __future__ import annotations

import argparse

from scaling.core.cli_args import positive


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="a whole scaling study: data, teacher, sweep with probes, fits, report",
                       description="Run a scaling study from a sweep file: generate its data and train its teacher "
                                   "([study] section), run the sweep (every trial trained, AR-probed and evaluated), "
                                   "fit the scaling curves and write the report. Re-running it continues where it "
                                   "stopped; nothing finished is redone.")
    p.add_argument("sweep", help="a sweep TOML file, e.g. sweeps/tiny.toml")
    p.add_argument("--poll", type=positive(float), default=2.0, help="seconds between looks at the trials' jobs (default 2)")
    p.set_defaults(func=_study)


def _study(args: argparse.Namespace) -> int:
    from scaling.core.startup import preload

    preload("scaling.study.run")
    from scaling.study.run import run_study
    from scaling.sweep.spec import load_sweep

    run_study(load_sweep(args.sweep), poll_s=args.poll)
    return 0
