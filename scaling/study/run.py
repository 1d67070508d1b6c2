"""``scaling study SWEEP``: a whole scaling study, each step skipped when its result is already there.

1. the synthetic dataset (``[study.synth]``), unless complete;
2. the teacher for semantic regularisation (``[study.teacher]``), unless trained for the same spec and data;
3. the sweep: every trial trained, then AR-probed and evaluated when ``probe = true`` (``scaling sweep run``,
   which resumes: finished trials are never re-run, unfinished ones resume from their checkpoints);
4. the scaling fits and the report over the sweep's runs (``scaling analyze``), written anew each time.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from optuna.trial import TrialState

from scaling.analysis.tables.compute import FLOPS
from scaling.core.errors import UserError
from scaling.sweep.budget import plan_sweep
from scaling.sweep.driver import CANCEL_ATTR, PARENT_ATTR, log, run_sweep
from scaling.sweep.prepare import prepare_data, prepare_teacher
from scaling.sweep.spec import SweepSpec


def run_study(spec: SweepSpec, poll_s: float = 2.0) -> Path:
    """Run (or continue) the study; the report's path."""
    plan_sweep(spec)  # the planned cost; a study over its budget stops here
    prepare_data(spec)
    prepare_teacher(spec)
    study = run_sweep(spec, poll_s=poll_s)
    if study.user_attrs.get(CANCEL_ATTR):
        raise UserError(f"sweep {spec.name} was cancelled; re-run 'scaling study' to continue it")
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        raise UserError(f"sweep {spec.name}: no trial completed, nothing to analyse (see 'scaling sweep status')")
    return write_report(spec, study.user_attrs[PARENT_ATTR])


def write_report(spec: SweepSpec, parent_run_id: str) -> Path:
    from scaling.analysis.report.analyze import AnalyzeOptions, analyze
    from scaling.core.config import TrackingConfig
    from scaling.tracking.mlflow_tracker import tracking_uri

    uri = tracking_uri(TrackingConfig(uri=spec.tracking.uri))
    options = AnalyzeOptions(bootstrap=spec.study.bootstrap, seed=spec.seed, sensitivity=spec.study.sensitivity)
    report = analyze(parent_run_id, spec.report_dir(), tracking_uri=uri, options=options)
    fits = spec.report_dir() / "fits.json"
    lines = mixed_lines(fits) + headline(fits) + compute_optimal_lines(spec.report_dir() / "compute.json")
    for line in lines + semantic_effect(spec, spec.report_dir() / "runs.csv"):
        log(line)
    import mlflow

    store = uri or mlflow.get_tracking_uri()
    log(f"report: {report.resolve()}")
    log(f"runs:   mlflow ui --backend-store-uri {shlex.quote(store)}   (experiment {spec.tracking.experiment!r}, "
        f"parent run {parent_run_id})")
    return report


def headline(fits_json: Path) -> list[str]:
    """One line per fitted power law y = E + A N^-alpha (or A C^-alpha against training FLOPs): metric, group,
    alpha with its 95% interval; or why the data support no law."""
    lines = []
    for fit in json.loads(fits_json.read_text()):
        if fit.get("form") != "power" or "alpha" not in fit.get("params", {}):
            continue
        against = " against compute" if fit.get("x") == FLOPS else ""
        if fit.get("no_law"):
            lines.append(f"fit: {fit['y']}{against} ({fit['semantic_group']} semantic reg.): {fit['no_law']}")
            continue
        alpha = fit["params"]["alpha"]
        lo, hi = fit["ci"].get("alpha") or (None, None)
        ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
        trend = "" if alpha > 0 else " (grows with size)"
        lines.append(f"fit: {fit['y']}{against} ({fit['semantic_group']} semantic reg.): alpha = {alpha:.2f}{ci}"
                     f"{trend}")
    return lines


def mixed_lines(fits_json: Path) -> list[str]:
    """Each warning that a fitted metric was measured differently across its runs, once."""
    found = [w for fit in json.loads(fits_json.read_text()) for w in fit.get("warnings", [])
             if " was measured differently: " in w]
    return [f"warning: {w}" for w in dict.fromkeys(found)]


def compute_optimal_lines(compute_json: Path) -> list[str]:
    """An isoFLOP grid's findings: per group, the loss-optimal size of each budget with its interval, and the law
    through them (or why there is none)."""
    lines = []
    for co in json.loads(compute_json.read_text()) if compute_json.is_file() else []:
        where = f"compute-optimal size by {co['metric']} ({co['semantic_group']} semantic reg.)"
        for b in co["budgets"]:
            if b["n_opt"] is None:
                lines.append(f"{where}: {b['left_out']}")
            else:
                lo, hi = b["ci"]
                span = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
                lines.append(f"{where}: budget {b['budget']:.3g}: N_opt = {b['n_opt']:.3g}{span}")
        law = co["law"]
        lines.append(f"{where}: {law['law']}" if law else f"{where}: no law over budgets: {co['why_no_law']}")
    return lines


EFFECT_METRICS = ("probe/gfid", "probe/ar_val_loss", "probe/linear_acc", "flow/gfid", "flow/val_loss",
                  "flow/linear_acc", "eval/rfid", "eval/psnr")


def semantic_effect(spec: SweepSpec, runs_csv: Path) -> list[str]:
    """Per metric, semantic regularisation on against off at the same grid point (all other axes equal): at how
    many points it is better, and the means. Empty unless ``loss.semantic_weight`` is a grid axis."""
    import pandas as pd

    from scaling.analysis.tables.runs import higher_is_better
    from scaling.analysis.tables.tradeoff import SEMANTIC_WEIGHT

    if not spec.is_grid or SEMANTIC_WEIGHT not in spec.grid.axes:
        return []
    runs = pd.read_csv(runs_csv)
    others = [k for k in spec.grid.axes if k != SEMANTIC_WEIGHT and k in runs.columns]
    semantic = (pd.to_numeric(runs[SEMANTIC_WEIGHT], errors="coerce").fillna(0) > 0).to_numpy()
    lines = []
    for metric in (m for m in EFFECT_METRICS if m in runs.columns):
        frame = runs[others + [metric]].assign(semantic=semantic)
        pairs = frame.pivot_table(index=others or None, columns="semantic", values=metric, aggfunc="mean").dropna()
        if not {True, False} <= set(pairs.columns) or pairs.empty:
            continue
        on, off = pairs[True], pairs[False]
        better = int((on > off).sum() if higher_is_better(metric) else (on < off).sum())
        lines.append(f"semantic reg.: {metric} better at {better}/{len(pairs)} sizes "
                     f"(mean {on.mean():.4g} with, {off.mean():.4g} without)")
    return lines
