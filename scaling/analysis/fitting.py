"""Fit a FitSpec to a table: validate the columns, fit, bootstrap, and attach warnings and words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.analysis import table
from scaling.analysis.bootstrap import bootstrap as bootstrap_law
from scaling.analysis.derived import deriver
from scaling.analysis.fit import fit
from scaling.analysis.forms import form_for
from scaling.analysis.isoflop import bootstrap_isoflop, fit_isoflop
from scaling.analysis.quality import warnings_for
from scaling.analysis.sensitivity import grid_refit, sensitivity as sensitivity_rows
from scaling.analysis.spec import FitOutcome, FitSpec
from scaling.analysis.words import describe
from scaling.core.errors import UserError


def check_spec(spec: FitSpec) -> None:
    """A UserError for a spec that asks for an inconsistent fit."""
    if spec.form == "chinchilla" and not spec.x2:
        raise UserError("--form chinchilla needs --x2 COLUMN (the data axis D; --x is N)")
    if spec.form != "chinchilla" and spec.x2:
        raise UserError("--x2 applies only to --form chinchilla")
    if spec.form == "isoflop" and not spec.group:
        raise UserError("--form isoflop needs --group COLUMN (each run's compute budget C)")
    if spec.form != "isoflop" and spec.group:
        raise UserError("--group applies only to --form isoflop (the compute-budget column)")
    want = 2 if spec.form == "chinchilla" else 1
    if spec.target is not None and len(spec.target) != want:
        what = "N,D" if want == 2 else ("C" if spec.form == "isoflop" else "X")
        raise UserError(f"--target for --form {spec.form} is {what}, got {len(spec.target)} value(s)")


def _fit_law(
    df: pd.DataFrame, spec: FitSpec, reps: int, seed: int | None, with_sensitivity: bool, dropna: bool
) -> FitOutcome:
    form = form_for(spec.form, spec.offset)
    xs, y = table.positive_arrays(df, spec.inputs, spec.y, dropna=dropna)
    table.check_identifiable(xs, spec.inputs, form.n_params, spec.form)
    starts = form.epoch_grid() if spec.grid == "epoch" else None
    res = fit(form, xs, y, loss=spec.loss, starts=starts)
    derive = deriver(form, spec.target)
    boot = None
    if reps > 0:
        boot = bootstrap_law(res, xs, y, reps, seed=seed, derive=derive, loss=spec.loss)
    out = FitOutcome(
        spec=spec,
        result=res,
        params=res.params,
        objective=res.objective,
        n_points=res.n_points,
        converged=res.converged,
        xs=xs,
        y=y,
        derived=derive(res.params) if derive else {},
        boot=boot,
        diagnostics=res.diagnostics(),
    )
    if with_sensitivity:
        out.sensitivity = sensitivity_rows(res, xs, y, grid_refit(res, starts))
    return out


def _fit_isoflop(
    df: pd.DataFrame, spec: FitSpec, reps: int, seed: int | None, dropna: bool
) -> FitOutcome:
    assert spec.group is not None
    data = table.numeric(df, [spec.x, spec.y, spec.group], dropna=dropna)
    n, loss, budget = (data[c].to_numpy(dtype=float) for c in (spec.x, spec.y, spec.group))
    if (n <= 0).any() or (budget <= 0).any():
        raise UserError(f"columns {spec.x!r} and {spec.group!r} must be positive (fitted in logs)")
    res = fit_isoflop(n, loss, budget)
    target = spec.target[0] if spec.target else None
    derived = {"b": 1 - res.a} | ({"prediction": float(res.n_opt(target))} if target else {})
    boot = bootstrap_isoflop(n, loss, budget, reps, seed=seed, target=target) if reps > 0 else None
    return FitOutcome(
        spec=spec,
        result=res,
        params=res.params,
        objective=res.objective,
        n_points=int(n.size),
        converged=True,
        xs=np.vstack([n, budget]),
        y=loss,
        derived=derived,
        boot=boot,
        diagnostics={"budgets": len(res.profiles)},
    )


def fit_table(
    df: pd.DataFrame,
    spec: FitSpec,
    *,
    bootstrap: int = 1000,
    seed: int | None = 0,
    sensitivity: bool = False,
    dropna: bool = False,
) -> FitOutcome:
    """Fit ``spec`` to ``df`` with ``bootstrap`` replicates; a UserError for unusable input."""
    check_spec(spec)
    if bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {bootstrap}")
    if spec.form == "isoflop":
        out = _fit_isoflop(df, spec, bootstrap, seed, dropna)
    else:
        out = _fit_law(df, spec, bootstrap, seed, sensitivity, dropna)
    out.warnings = warnings_for(out)
    out.law = describe(out)
    return out
