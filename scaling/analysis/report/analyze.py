"""``scaling analyze``: from runs (MLflow or CSV) to fits, figures, a CSV of parameters and an HTML report.

Per metric and per semantic-regularisation group, the metric is fitted as y = E + A N^-alpha against
tokenizer size N (counted parameters; not on an isoFLOP grid, whose loss against size at one budget is a profile);
linear-probe accuracy is fitted as its error, 1 - accuracy, so
that every fitted metric falls with scale. When images seen vary across runs too, the reconstruction
loss also gets the two-variable Chinchilla fit in (N, images seen). Where runs logged their training FLOPs,
each metric is also fitted against compute over its compute-efficient runs; where the runs form an isoFLOP
grid (``train.flops_budget``), each budget's loss-optimal size is located with its interval and the law
N_opt = k C^a is fitted through the optima (``tables.compute``).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.analysis.laws.outcome import FitOutcome
from scaling.analysis.laws.request import FitRequest
from scaling.analysis.laws.words import describe
from scaling.analysis.report import plots
from scaling.analysis.report.html import Analysis, FitEntry, write_report
from scaling.analysis.tables import tradeoff
from scaling.analysis.tables.compute import BUDGET, FLOPS, OPTIMAL_METRICS, compute_optimal, frontier, has_budgets
from scaling.analysis.tables.fit import fit_table
from scaling.analysis.tables.provenance import mixed_measurements
from scaling.analysis.tables.repeats import DATA_AXIS, longest_trained, repeats
from scaling.analysis.tables.runs import load_runs
from scaling.core.errors import UserError
from scaling.core.paths import check_dir_path

LABELS = {
    "eval/rfid": "rFID",
    "eval/lpips": "LPIPS",
    "eval/psnr": "PSNR",
    "eval/ssim": "SSIM",
    "val/recon_loss": "val recon loss",
    "probe/gfid": "AR-probe gFID",
    "probe/ar_val_loss": "AR val loss",
    "probe/linear_acc": "linear-probe acc.",
    "probe/linear_err": "linear-probe error",
    "flow/gfid": "flow-probe gFID",
    "flow/val_loss": "flow val loss",
    "flow/linear_acc": "flow linear-probe acc.",
    "flow/linear_err": "flow linear-probe error",
}
FITTED = ("eval/rfid", "eval/lpips", "val/recon_loss", "probe/gfid", "probe/ar_val_loss", "probe/linear_err",
          "flow/gfid", "flow/val_loss", "flow/linear_err")
LINEAR_ERROR = {"probe/linear_acc": "probe/linear_err", "flow/linear_acc": "flow/linear_err"}
# The metric that also gets the (N, images seen) Chinchilla fit, first one present.
TWO_VARIABLE = ("val/recon_loss", "eval/rfid")
MIN_TWO_VARIABLE_RUNS = 9
ISOFLOP_SIZES = ("an isoFLOP grid: at a fixed budget a larger tokenizer sees fewer images, so loss against size is "
                 "a profile with a minimum, not a power law; see each budget's compute-optimal size")


@dataclass(frozen=True)
class AnalyzeOptions:
    size: str = "params_total"
    target_scale: float | None = None
    bootstrap: int = 400
    seed: int | None = 0
    sensitivity: bool = True
    metrics: tuple[str, ...] | None = None  # columns to fit against size (default: FITTED)
    semantic: str = tradeoff.SEMANTIC_WEIGHT
    encoder: str = "params_encoder"
    decoder: str = "params_decoder"
    target_compute: float | None = None  # budget to extrapolate the compute-optimal size to (default: 10x the largest)
    strict_budgets: bool = False  # refuse an isoFLOP budget whose minimum lies at an edge of its sizes


@dataclass
class _State:
    """What the analysis steps share: the runs, their semantic groups, options, and fits so far."""

    runs: pd.DataFrame
    groups: pd.Series
    opts: AnalyzeOptions
    plot_dir: Path
    longest: pd.Series  # the runs that saw the most images of their size and group (``tables.repeats``)
    isoflop: bool  # runs name a train.flops_budget: loss against size is a budget's profile, not a law
    entries: list[FitEntry] = field(default_factory=list)
    compute_entries: list[FitEntry] = field(default_factory=list)


def with_linear_error(df: pd.DataFrame) -> pd.DataFrame:
    """Add each probe's linear_err = 1 - accuracy (or 100 - accuracy for percentages)."""
    for acc_key, err_key in LINEAR_ERROR.items():
        acc = pd.to_numeric(df[acc_key], errors="coerce") if acc_key in df.columns else pd.Series(np.nan, df.index)
        full = 100.0 if acc.max() > 1 else 1.0
        df = df.assign(**{err_key: np.nan if acc.isna().all() else full - acc})
    return df


def _fit_column(metric: str) -> str:
    """The column fitted for ``metric``: accuracy is fitted as error so that it falls with scale."""
    return LINEAR_ERROR.get(metric, metric)


def _entry(state: _State, request: FitRequest, group: str, rows: pd.DataFrame, sensitivity: bool) -> FitEntry:
    """Fit ``request`` to one group's runs; a fit the data cannot support becomes a skipped entry."""
    o = state.opts
    label = LABELS.get(request.y, request.y)
    try:
        out = fit_table(rows, request, bootstrap=o.bootstrap, seed=o.seed, sensitivity=sensitivity,
                        dropna=True)
    except UserError as e:
        return FitEntry(request.y, label, group, None, str(e))
    out.law = describe(out, {o.size: "N", DATA_AXIS: "D", FLOPS: "C", request.y: label})
    out.warnings = mixed_measurements(state.runs.loc[rows.index], request.y) + out.warnings
    return FitEntry(request.y, label, group, out, None)


def _scaling(state: _State) -> list[plots.Figure]:
    """Power-law fits and one figure per metric that has data."""
    figures = []
    size, runs, groups = state.opts.size, state.runs[state.longest], state.groups[state.longest]
    metrics = list(state.opts.metrics or FITTED)
    repeated = repeats(runs, size, metrics, groups)  # the grid points found once for every metric
    for metric in metrics:
        data = runs[[size, metric]].assign(**{tradeoff.GROUP: groups.to_numpy()})
        data = data.dropna()
        if data.empty:
            continue
        fits: dict[str, FitOutcome] = {}
        target = (state.opts.target_scale,) if state.opts.target_scale else None
        request = FitRequest(form="power", x=size, y=metric, target=target)
        for group, rows in data.groupby(tradeoff.GROUP):
            if state.isoflop:  # each size's longest runs share the largest budget: a profile, no law
                state.entries.append(FitEntry(metric, LABELS.get(metric, metric), str(group), None, ISOFLOP_SIZES))
                continue
            entry = _entry(state, request, str(group), rows, sensitivity=state.opts.sensitivity)
            state.entries.append(entry)
            if entry.outcome is not None:
                fits[str(group)] = entry.outcome
        stem = state.plot_dir / f"scaling_{metric.replace('/', '_')}"
        figures.append(plots.scaling_plot(data, metric, LABELS.get(metric, metric), size, fits,
                                          state.opts.target_scale, stem, repeated[repeated["metric"] == metric]))
    return figures


def _two_variable(state: _State) -> list[plots.Figure]:
    """Chinchilla fit in (N, images seen) for the reconstruction loss when both vary (cooldown branches give
    several data budgets per size), and its loss surface."""
    size, runs = state.opts.size, state.runs
    chosen = [m for m in TWO_VARIABLE if not state.opts.metrics or m in state.opts.metrics]
    metric = next((m for m in chosen if runs[m].notna().sum() >= MIN_TWO_VARIABLE_RUNS), None)
    if metric is None or runs[DATA_AXIS].nunique() < 3:
        return []
    request = FitRequest(form="chinchilla", x=size, x2=DATA_AXIS, y=metric)
    figures = []
    for group, rows in runs.assign(**{tradeoff.GROUP: state.groups.to_numpy()}).groupby(tradeoff.GROUP):
        entry = _entry(state, request, str(group), rows, sensitivity=False)
        state.entries.append(entry)
        if entry.outcome is not None and entry.outcome.no_law is None:
            stem = state.plot_dir / f"surface_{metric.replace('/', '_')}_{str(group).replace(' ', '_')}"
            figures.append(plots.surface_plot(entry.outcome, str(group), LABELS.get(metric, metric), size, stem))
    return figures


def _against_compute(state: _State) -> list[plots.Figure]:
    """Each metric against training FLOPs, its law fitted over the compute-efficient runs of each group."""
    if state.runs[FLOPS].notna().sum() == 0:
        return []
    figures = []
    for metric in state.opts.metrics or FITTED:
        data = state.runs[[FLOPS, metric]].assign(**{tradeoff.GROUP: state.groups.to_numpy()}).dropna()
        if data.empty:
            continue
        fits: dict[str, FitOutcome] = {}
        for group, rows in data.groupby(tradeoff.GROUP):
            entry = _entry(state, FitRequest(form="power", x=FLOPS, y=metric), str(group), frontier(rows, metric),
                           sensitivity=False)
            state.compute_entries.append(entry)
            if entry.outcome is not None:
                fits[str(group)] = entry.outcome
        stem = state.plot_dir / f"compute_{metric.replace('/', '_')}"
        figures.append(plots.scaling_plot(data, metric, LABELS.get(metric, metric), FLOPS, fits, None, stem,
                                          compute=True))
    return figures


def _compute_optimal(state: _State, analysis: Analysis) -> list[plots.Figure]:
    """For an isoFLOP grid: per group, each budget's loss-optimal size and the law through them."""
    runs, o = state.runs, state.opts
    if not state.isoflop:
        return []
    metric = next((m for m in OPTIMAL_METRICS if runs[m].notna().any()), None)
    if metric is None:
        return []
    figures = []
    grouped = runs.assign(**{tradeoff.GROUP: state.groups.to_numpy()})
    for group, rows in grouped.groupby(tradeoff.GROUP):
        co = compute_optimal(rows, metric, o.size, str(group), bootstrap=o.bootstrap, seed=o.seed,
                             target=o.target_compute, strict=o.strict_budgets)
        analysis.compute_optimal.append(co)
        points = rows.assign(**{BUDGET: pd.to_numeric(rows[BUDGET], errors="coerce")})
        stem = f"isoflop_{metric.replace('/', '_')}_{str(group).replace(' ', '_')}"
        figures.append(plots.isoflop_plot(co, LABELS.get(metric, metric), o.size, points, state.plot_dir / stem))
    return figures


def _tradeoffs(state: _State, analysis: Analysis) -> list[plots.Figure]:
    size, runs, opts = state.opts.size, state.runs, state.opts
    metrics = [m for m in tradeoff.RECONSTRUCTION + tradeoff.GENERATION if runs[m].notna().any()]
    table = tradeoff.per_size(runs[state.longest], size, metrics, state.groups[state.longest])
    analysis.per_size = table
    figures = []
    gens = [g for g in tradeoff.GENERATION if g in table.columns]
    recon = next((r for r in tradeoff.RECONSTRUCTION if r in table.columns), None)
    if recon and gens:
        analysis.pareto = table[tradeoff.pareto_front(table, [recon, gens[0]])]
        figures.append(plots.tradeoff_plot(table, size, recon, gens, LABELS, state.plot_dir / "tradeoff"))
    analysis.flags = tradeoff.dilemma(table, size)
    analysis.trends = tradeoff.trends(table, size)
    if metrics:
        figures.append(plots.dilemma_plot(table, size, metrics, LABELS, analysis.flags,
                                          state.plot_dir / "metrics_by_size"))
    grouped = runs.assign(**{tradeoff.GROUP: state.groups.to_numpy()})
    for metric in ("probe/gfid", "flow/gfid", "eval/rfid"):
        found = [
            r for group, rows in grouped.groupby(tradeoff.GROUP)
            if (r := tradeoff.encoder_decoder(rows, metric, str(group), opts.encoder, opts.decoder))
        ]
        if found:
            analysis.encoder_decoder += found
            analysis.figures.setdefault("encoder_decoder", []).append(plots.encoder_decoder_plot(
                grouped, metric, LABELS.get(metric, metric), opts.encoder, opts.decoder,
                state.plot_dir / f"encoder_decoder_{metric.replace('/', '_')}"))
    return figures


def write_fits_csv(entries: list[FitEntry], path: Path) -> None:
    """One row per fitted parameter or derived quantity, values as repr (full precision)."""
    cols = ["metric", "group", "form", "x", "x2", "n_points", "objective", "converged", "kind",
            "name", "value", "ci_low", "ci_high", "se"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for e in entries:
            if e.outcome is None:
                continue
            o = e.outcome
            head = [e.metric, e.group, o.request.form, o.request.x, o.request.x2 or "", o.n_points,
                    repr(o.objective), o.converged]
            for kind, values in (("param", o.params), ("derived", o.derived)):
                for name, value in values.items():
                    lo, hi = o.ci(name)
                    w.writerow(head + [kind, name, repr(value), repr(lo), repr(hi), repr(o.se(name))])


def check_options(o: AnalyzeOptions) -> None:
    """Numbers that make no sense refused in one line, before anything is read or written."""
    if o.bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {o.bootstrap}")
    for flag, value in (("--target-scale", o.target_scale), ("--target-compute", o.target_compute)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag}: must be a positive number, got {value:g}")


def analyze(
    source: str, out_dir: str | Path, *, tracking_uri: str | None = None,
    options: AnalyzeOptions = AnalyzeOptions(),
) -> Path:
    """Write ``report.html``, ``plots/``, ``fits.csv``, ``fits.json`` (every law: against size, (N, D) and
    compute), ``compute.json`` (compute-optimal sizes of an isoFLOP grid) and ``runs.csv`` under ``out_dir``;
    return the report's path."""
    out = Path(out_dir)
    check_options(options)
    check_dir_path(out, "--out")
    runs = with_linear_error(load_runs(source, tracking_uri))
    if options.size not in runs.columns or runs[options.size].notna().sum() == 0:
        raise UserError(f"no values in size column {options.size!r} (choose one with --size)")
    if options.metrics:
        options = replace(options, metrics=tuple(_fit_column(m) for m in options.metrics))
        missing = [m for m in options.metrics if m not in runs.columns]
        if missing:
            raise UserError(f"no column {missing[0]!r} among the runs (for --metrics)")
    out.mkdir(parents=True, exist_ok=True)
    groups = tradeoff.semantic_groups(runs, options.semantic)
    state = _State(runs, groups, options, out / "plots", longest_trained(runs, options.size, groups),
                   has_budgets(runs))
    analysis = Analysis(source=source, runs=runs, size=options.size, target=options.target_scale,
                        bootstrap=options.bootstrap,
                        shorter_runs=0 if state.isoflop else int((~state.longest).sum()))  # no size law
    analysis.figures["scaling"] = _scaling(state)
    analysis.figures["surface"] = _two_variable(state)
    shown = [m for m in (options.metrics or FITTED) + tradeoff.RECONSTRUCTION + tradeoff.GENERATION
             if m in runs.columns and runs[m].notna().any()]
    analysis.repeats = repeats(runs, options.size, list(dict.fromkeys(shown)), groups)
    analysis.figures["compute"] = _against_compute(state) + _compute_optimal(state, analysis)
    analysis.figures["tradeoff"] = _tradeoffs(state, analysis)
    analysis.measurement_warnings = [w for m in LABELS for w in mixed_measurements(runs, m)]
    analysis.fits, analysis.compute_fits = state.entries, state.compute_entries
    runs.to_csv(out / "runs.csv", index=False)
    entries = state.entries + state.compute_entries
    write_fits_csv(entries, out / "fits.csv")
    payload = [e.outcome.to_dict() | {"semantic_group": e.group} for e in entries if e.outcome]
    (out / "fits.json").write_text(json.dumps(payload, indent=1, allow_nan=False))
    (out / "compute.json").write_text(json.dumps([co.to_dict() for co in analysis.compute_optimal], indent=1,
                                                 allow_nan=False))
    return write_report(analysis, out / "report.html", LABELS)
