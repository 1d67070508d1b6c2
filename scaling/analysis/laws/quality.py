"""Warnings about weak fits: what a reader should know before trusting a fitted law."""

from __future__ import annotations

import math

import numpy as np

from scaling.analysis.laws.forms import COEF_NAMES, EXPONENT_NAMES
from scaling.analysis.laws.isoflop import IsoflopResult
from scaling.analysis.laws.optimize import NEAR_BEST_RTOL, FitResult
from scaling.analysis.laws.outcome import FitOutcome
from scaling.analysis.laws.words import floor_at_bound, interval, num

# Fewer points per parameter than this gives a weakly constrained fit.
POINTS_PER_PARAM = 3
# Fewer distinct scales than this makes the curvature of a saturating law guesswork.
FEW_SCALES = 5
# Equally good minima that disagree by more than this (relative) mean a parameter is not identified.
SPREAD_TOLERANCE = 0.05
# Predictions further than this factor beyond the largest sampled scale are flagged.
FAR_EXTRAPOLATION = 10.0
# The exponents a fit may have (power and Chinchilla forms; isoFLOP's N_opt ~ C^a).
EXPONENTS = ("alpha", "beta", "a")
# An exponent beyond this is no scaling law: its term vanishes past the smallest scale (the exponents of vision
# and language scaling studies lie below 2).
MAX_EXPONENT = 5.0
# Bootstrap replicates with fewer distinct answers than this share of those used have collapsed onto a few fits:
# their spread is not the parameter's uncertainty.
COLLAPSED_SHARE = 0.1


def no_law(out: FitOutcome) -> str | None:
    """Why a fitted power law is no finding, in words ("the data cannot ..."); None when it may be stated. An
    exponent past ``MAX_EXPONENT`` makes a step, not a law; a fit flat over all but the smallest scale (it moves
    there less than the points scatter about it) says the metric does not follow one."""
    res = out.result
    if not isinstance(res, FitResult):
        return None
    for key in EXPONENT_NAMES:
        if key in out.params and abs(out.params[key]) > MAX_EXPONENT:
            return (f"no power law: the exponent {key} ran to {num(out.params[key])}, so the fitted curve is flat past "
                    "the smallest size; the metric does not follow a power law over these sizes")
    xs = np.atleast_2d(out.xs)
    if xs.shape[0] != 1 or np.unique(xs[0]).size < 3:
        return None
    fitted = res.form.predict(out.params, xs)
    rest = xs[0] > xs[0].min()
    scatter = float(np.std(out.y - fitted))
    if np.ptp(fitted[rest]) < scatter:
        return ("no power law: past the smallest size the fitted curve moves less than the points scatter about it; "
                "the metric is flat over these sizes")
    return None


def _collapsed(out: FitOutcome) -> list[str]:
    """Replicates that refit to a few identical answers: an interval read off them is not an uncertainty."""
    if out.boot is None:
        return []
    notes = []
    for key in EXPONENTS:
        v = out.boot.samples.get(key)
        if v is None or v.size < 10:
            continue
        distinct = np.unique(np.round(v[np.isfinite(v)], 6)).size
        if distinct < COLLAPSED_SHARE * v.size:
            notes.append(f"the bootstrap replicates of {key} collapse onto {distinct} answer(s) of {v.size}: its "
                         "interval is not an uncertainty")
    return notes


def _convergence(out: FitOutcome) -> list[str]:
    res = out.result
    if not isinstance(res, FitResult):
        return []
    notes = []
    if res.stuck_at_start:
        notes.append(f"the best fit stopped at its start after {res.iterations} iteration(s)")
    elif not res.converged:
        notes.append(
            f"the fit did not converge: gradient norm {num(res.grad_norm)} after {res.iterations} "
            f"iterations ({res.message})"
        )
    # Coefficients slide along with the exponents in a flat valley; the exponents and E tell the story.
    loose = [
        (f"{spread:.0%}" if spread < 10 else "orders of magnitude") + f" in {name}"
        for name, spread in res.spread.items()
        if spread > SPREAD_TOLERANCE and name not in COEF_NAMES
    ]
    if loose:
        notes.append(
            f"minima from different starts with the same objective (within {NEAR_BEST_RTOL:.0e}) differ "
            f"by {', '.join(loose)}: those parameters are poorly identified"
        )
    return notes


def _sampling(out: FitOutcome) -> list[str]:
    n_params = len(out.params)
    notes = []
    if out.n_points < POINTS_PER_PARAM * n_params:
        notes.append(
            f"only {out.n_points} points for {n_params} parameters: treat the intervals as rough"
        )
    for row, name in zip(np.atleast_2d(out.xs), out.request.inputs):
        k = np.unique(row).size
        if k < FEW_SCALES:
            notes.append(f"only {k} distinct values of {name}: the curve's shape rests on few scales")
    return notes


def _bootstrap(out: FitOutcome) -> list[str]:
    if out.boot is None:
        return ["no bootstrap: the parameters have no intervals"]
    b, notes = out.boot, []
    if b.n_failed:
        notes.append(
            f"{b.n_failed} of {b.n_replicates} bootstrap replicates did not converge and are left out"
        )
    if b.n_degenerate:
        notes.append(
            f"{b.n_degenerate} of {b.n_replicates} bootstrap resamples had too few distinct scales "
            "to fit and are left out"
        )
    for key in EXPONENTS:
        lo, hi = out.ci(key)
        if key not in out.params or not math.isfinite(lo):
            continue
        if lo <= 0 <= hi:
            notes.append(f"the 95% interval of {key} {interval(lo, hi)} includes 0: no clear scaling")
        elif hi - lo > abs(out.params[key]):
            notes.append(
                f"the exponent {key} is poorly determined: {num(out.params[key])}, 95% interval "
                f"{interval(lo, hi)}"
            )
    if "E" in out.params:
        lo, hi = out.ci("E")
        if floor_at_bound(out):  # not a measured floor
            notes.append("the floor E is at its bound (~0): the data show no floor")
        elif math.isfinite(lo) and hi - lo > out.params["E"]:
            notes.append(f"the floor E is poorly identified: 95% interval {interval(lo, hi)}")
    return notes


def _extrapolation(out: FitOutcome) -> list[str]:
    target = out.request.target
    if not target:
        return []
    notes = []
    if any(out.params.get(k, 0) < 0 for k in ("alpha", "beta")):
        notes.append("the metric grows with scale here; the fitted law has no ceiling, so its "
                     "extrapolation grows without bound")
    for t, row, name in zip(target, np.atleast_2d(out.xs), out.request.inputs):
        factor = t / row.max()
        if factor > FAR_EXTRAPOLATION:
            notes.append(
                f"the prediction extrapolates {factor:.0f}x beyond the largest sampled {name}"
            )
    return notes


def _budgets(out: FitOutcome) -> list[str]:
    res = out.result
    if not isinstance(res, IsoflopResult):
        return []
    few = [f"only {len(res.profiles)} compute budgets: the exponent rests on few points"] \
        if len(res.profiles) < FEW_SCALES else []
    return list(res.skipped) + few


def warnings_for(out: FitOutcome) -> list[str]:
    """Every warning that applies to ``out``, most serious first."""
    if isinstance(out.result, IsoflopResult):
        return _collapsed(out) + _bootstrap(out) + _budgets(out)
    return _convergence(out) + _collapsed(out) + _bootstrap(out) + _sampling(out) + _extrapolation(out)
