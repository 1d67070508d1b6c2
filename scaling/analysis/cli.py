"""``scaling fit`` and ``scaling analyze``. Heavy imports (pandas, scipy, matplotlib, mlflow) happen
inside the commands so that building the CLI parser stays cheap."""

from __future__ import annotations

import argparse
import math

from scaling.core.errors import UserError

FIT_HELP = """Fit a scaling law to any CSV and print one JSON object with params, ci (95%), se,
objective, n_points, converged, derived quantities, warnings and the law in words.
Example (Epoch's Chinchilla data):
  scaling fit chinchilla.csv --form chinchilla --x "Model Size" --x2 D --y loss \\
    --derive "D=Training FLOP/(6*Model Size)" --drop-top-loss 5 --bootstrap 1000"""

ANALYZE_HELP = """Build a report (plots, HTML, fitted-parameter CSV) from an MLflow experiment name,
a sweep's parent run id, or a CSV of runs."""


def _targets(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--target wants numbers separated by commas, got {text!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"--target wants positive numbers (a size, data or compute), got {text!r}")
    return values


def _add_fit_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit", help="fit a scaling law to a CSV", description=FIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("csv", help="table with one row per run")
    p.add_argument("--form", required=True, choices=["power", "chinchilla", "isoflop"])
    p.add_argument("--x", required=True, help="scale column: N, D or C (isoflop: N)")
    p.add_argument("--y", required=True, help="the metric (loss, rFID, ...)")
    p.add_argument("--x2", help="chinchilla: the data column D (then --x is N)")
    p.add_argument("--group", help="isoflop: the compute-budget column C")
    p.add_argument("--strict-budgets", action="store_true",
                   help="isoflop: refuse a budget whose loss minimum lies outside its sizes (default: leave it "
                   "out with a warning)")
    p.add_argument("--no-offset", action="store_true", help="power: fit y = A x^-alpha (E = 0)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="replicates (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--derive", action="append", default=[], metavar="NAME=EXPR",
        help="add a column from arithmetic on others, e.g. 'D=Training FLOP/(6*Model Size)'; "
        "repeatable, applied in order before anything else",
    )
    p.add_argument("--drop-top-loss", type=int, default=0, metavar="K", help="drop the K highest-y rows")
    p.add_argument("--dropna", action="store_true", help="drop rows with missing values in used columns")
    p.add_argument("--loss", choices=["huber", "squared"], default="huber")
    p.add_argument(
        "--grid", choices=["auto", "epoch"], default="auto",
        help="starts: data-adapted grid, or Epoch's 4,500-start grid (slower)",
    )
    p.add_argument("--target", help="predict at X (power), N,D (chinchilla) or C (isoflop)")
    p.add_argument("--sensitivity", action="store_true", help="add squared-error/outlier/largest-scale refits")
    p.set_defaults(func=run_fit)


def _add_analyze_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("analyze", help="write a scaling report", description=ANALYZE_HELP)
    p.add_argument("source", help="MLflow experiment name, sweep parent run id, or runs CSV")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's own default)")
    p.add_argument("--target-scale", type=float, help="tokenizer size N to extrapolate to")
    p.add_argument("--size", default="params_total", help="size column (default params_total)")
    p.add_argument("--target-compute", type=float,
                   help="isoFLOP grid: budget (FLOPs) to extrapolate the compute-optimal size to (default: 10x the "
                   "largest)")
    p.add_argument("--strict-budgets", action="store_true",
                   help="isoFLOP grid: refuse a budget whose loss minimum lies at an edge of its sizes (default: "
                   "leave it out with a warning)")
    p.add_argument("--bootstrap", type=int, default=400, metavar="N", help="replicates per fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity refits (faster)")
    p.add_argument(
        "--metrics", help="comma-separated columns to fit against size (default: rFID, LPIPS, val "
        "recon loss, gFID, AR val loss, linear-probe error)",
    )
    p.set_defaults(func=run_analyze)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fit`` and ``analyze`` to the ``scaling`` command."""
    _add_fit_parser(subparsers)
    _add_analyze_parser(subparsers)


def run_fit(args: argparse.Namespace) -> int:
    import json

    from scaling.analysis.laws.request import FitRequest, check_request
    from scaling.analysis.tables import expressions, read
    from scaling.analysis.tables.fit import fit_table

    request = FitRequest(
        form=args.form, x=args.x, y=args.y, x2=args.x2, group=args.group,
        offset=not args.no_offset, loss=args.loss, grid=args.grid, target=_targets(args.target),
        strict=args.strict_budgets,
    )
    check_request(request)
    df = read.read_csv(args.csv)
    for derivation in args.derive:
        df = expressions.derive(df, derivation)
    read.require_columns(df, [c for c in (args.x, args.y, args.x2, args.group) if c])
    df = read.drop_top(df, args.y, args.drop_top_loss)
    out = fit_table(
        df, request, bootstrap=args.bootstrap, seed=args.seed,
        sensitivity=args.sensitivity, dropna=args.dropna,
    )
    print(json.dumps(out.to_dict(), indent=2, allow_nan=False, ensure_ascii=False))
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from scaling.analysis.report.analyze import AnalyzeOptions, analyze

    options = AnalyzeOptions(
        size=args.size, target_scale=args.target_scale, bootstrap=args.bootstrap, seed=args.seed,
        sensitivity=not args.no_sensitivity, target_compute=args.target_compute, strict_budgets=args.strict_budgets,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else None,
    )
    report = analyze(args.source, args.out, tracking_uri=args.tracking_uri, options=options)
    print(report)
    return 0
