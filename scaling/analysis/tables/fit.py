"""Fit a FitRequest to a table: check that its columns can support the law, fit, bootstrap, and attach
warnings and the law in words (what ``scaling fit`` prints and ``scaling analyze`` fits per group)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.analysis.laws.bootstrap import bootstrap as bootstrap_law
from scaling.analysis.laws.derived import deriver
from scaling.analysis.laws.forms import form_for
from scaling.analysis.laws.isoflop import bootstrap_isoflop, fit_isoflop
from scaling.analysis.laws.optimize import fit
from scaling.analysis.laws.outcome import FitOutcome
from scaling.analysis.laws.quality import no_law, warnings_for
from scaling.analysis.laws.request import FitRequest, check_request
from scaling.analysis.laws.sensitivity import grid_refit, sensitivity as sensitivity_rows
from scaling.analysis.laws.words import describe
from scaling.analysis.tables import read
from scaling.core.errors import UserError

# Fewer distinct scales than this cannot pin down a saturating law's three parameters.
MIN_SCALES = 3


def positive_arrays(
    df: pd.DataFrame, xcols: list[str], ycol: str, *, dropna: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(xs as variables x n, y) for a power-law fit: finite and positive, since it is fitted in logs."""
    data = read.numeric(df, xcols + [ycol], dropna=dropna)
    for col in xcols + [ycol]:
        values = data[col].to_numpy()
        if not np.isfinite(values).all():
            raise UserError(f"column {col!r} has infinite values")
        if (values <= 0).any():
            n = int((values <= 0).sum())
            raise UserError(f"column {col!r} has {n} value(s) <= 0; power laws are fitted in log space")
    return data[xcols].to_numpy(dtype=float).T, data[ycol].to_numpy(dtype=float)


def check_identifiable(xs: np.ndarray, names: list[str], n_params: int, form: str) -> None:
    """Enough points and distinct scales for ``n_params`` parameters, or a UserError saying which."""
    n = xs.shape[1]
    if n < n_params + 2:
        raise UserError(
            f"{n} points for a {n_params}-parameter {form} fit; need at least {n_params + 2}"
        )
    for row, name in zip(xs, names):
        distinct = np.unique(row)
        if distinct.size < MIN_SCALES:
            shown = ", ".join(f"{v:.3g}" for v in distinct)
            raise UserError(
                f"{name!r} takes {distinct.size} distinct value(s) ({shown}); "
                f"a scaling fit needs at least {MIN_SCALES} scales"
            )


def _fit_law(
    df: pd.DataFrame, request: FitRequest, reps: int, seed: int | None, with_sensitivity: bool, dropna: bool
) -> FitOutcome:
    form = form_for(request.form, request.offset)
    xs, y = positive_arrays(df, request.inputs, request.y, dropna=dropna)
    check_identifiable(xs, request.inputs, form.n_params, request.form)
    starts = form.epoch_grid() if request.grid == "epoch" else None
    res = fit(form, xs, y, loss=request.loss, starts=starts)
    derive = deriver(form, request.target)
    boot = None
    if reps > 0:
        boot = bootstrap_law(res, xs, y, reps, seed=seed, derive=derive, loss=request.loss)
    out = FitOutcome(
        request=request,
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
    df: pd.DataFrame, request: FitRequest, reps: int, seed: int | None, dropna: bool
) -> FitOutcome:
    assert request.group is not None
    data = read.numeric(df, [request.x, request.y, request.group], dropna=dropna)
    n, loss, budget = (data[c].to_numpy(dtype=float) for c in (request.x, request.y, request.group))
    if (n <= 0).any() or (budget <= 0).any():
        raise UserError(f"columns {request.x!r} and {request.group!r} must be positive (fitted in logs)")
    res = fit_isoflop(n, loss, budget, strict=request.strict)
    target = request.target[0] if request.target else None
    derived = {"b": 1 - res.a} | ({"prediction": float(res.n_opt(target))} if target else {})
    kept = [p.budget for p in res.profiles]
    boot = bootstrap_isoflop(n, loss, budget, reps, seed=seed, target=target, kept=kept) if reps > 0 else None
    return FitOutcome(
        request=request,
        result=res,
        params=res.params,
        objective=res.objective,
        n_points=int(n.size),
        converged=True,
        xs=np.vstack([n, budget]),
        y=loss,
        derived=derived,
        boot=boot,
        diagnostics={"budgets": len(res.profiles), "budgets_left_out": len(res.skipped)},
    )


def fit_table(
    df: pd.DataFrame,
    request: FitRequest,
    *,
    bootstrap: int = 1000,
    seed: int | None = 0,
    sensitivity: bool = False,
    dropna: bool = False,
) -> FitOutcome:
    """Fit ``request`` to ``df`` with ``bootstrap`` replicates; a UserError for unusable input."""
    check_request(request)
    if bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {bootstrap}")
    if request.form == "isoflop":
        out = _fit_isoflop(df, request, bootstrap, seed, dropna)
    else:
        out = _fit_law(df, request, bootstrap, seed, sensitivity, dropna)
    out.no_law = no_law(out)
    out.warnings = warnings_for(out)
    out.law = describe(out)
    return out
