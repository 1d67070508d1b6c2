"""How much a fit moves under reasonable changes of procedure (Besiroglu et al. 2024 practice 5).

Variants: squared error instead of Huber; outliers dropped (log residuals beyond 3 robust standard
deviations of the baseline fit); the largest scale dropped. Each variant is refitted from the same
kind of start grid as the baseline, thinned (see ``grid_refit``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from scaling.analysis.laws.forms import COEF_NAMES
from scaling.analysis.laws.optimize import FitResult, Loss, fit
from scaling.analysis.laws.words import num

# Robust z-score beyond which a point counts as an outlier; 1.4826 * MAD estimates a normal SD.
OUTLIER_Z = 3.0
MAD_TO_SD = 1.4826
# Up to this many distinct sizes, "largest scale" means every run at the largest size; beyond it
# (sizes read off a plot, all distinct) it means the top tenth of runs by size.
GRID_LIKE_SIZES = 20

# Sensitivity refits use every GRID_STRIDE-th start of the baseline's grid (plus its optimum).
GRID_STRIDE = 3

Refit = Callable[[np.ndarray, np.ndarray, Loss], FitResult]


def outlier_mask(full: FitResult, xs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True for points whose log residual is more than OUTLIER_Z robust SDs from the median."""
    r = np.log(y) - np.log(full.form.predict(full.params, xs))
    mad = np.median(np.abs(r - np.median(r)))
    if mad == 0:
        return np.zeros(y.size, dtype=bool)
    return np.abs(r - np.median(r)) > OUTLIER_Z * MAD_TO_SD * mad


def largest_scale_mask(x: np.ndarray) -> tuple[np.ndarray, str]:
    """Rows at the largest scale of ``x`` and a description of what they are."""
    distinct = np.unique(x)
    if distinct.size <= GRID_LIKE_SIZES:
        mask = x == distinct[-1]
        return mask, f"all {int(mask.sum())} run(s) at the largest size {num(distinct[-1])}"
    cut = np.quantile(x, 0.9)
    mask = x > cut
    return mask, f"the {int(mask.sum())} runs above the 90th-percentile size {num(cut)}"


def _row(name: str, note: str, res: FitResult | None, base: FitResult) -> dict[str, object]:
    row: dict[str, object] = {"variant": name, "note": note}
    if res is None:
        return row | {"n_points": base.n_points, "params": None, "converged": None}
    # Coefficients (A, B) trade off against exponents along a flat valley, so the change that
    # matters is that of the exponents and the floor E.
    change = {
        k: (v - base.params[k]) / abs(base.params[k])
        for k, v in res.params.items()
        if k not in COEF_NAMES and base.params[k] != 0
    }
    return row | {
        "n_points": res.n_points,
        "params": res.params,
        "objective": res.objective,
        "converged": res.converged,
        "max_relative_change": max(abs(v) for v in change.values()),
    }


def sensitivity(full: FitResult, xs: np.ndarray, y: np.ndarray, refit: Refit) -> list[dict[str, object]]:
    """Baseline plus the three variants; ``refit(xs, y, loss)`` fits a subset the baseline's way."""
    rows = [_row("baseline", "Huber loss on all points", full, full)]
    rows.append(_row("squared error", "squared instead of Huber loss", refit(xs, y, "squared"), full))
    out = outlier_mask(full, xs, y)
    kept = xs.shape[1] - int(out.sum())
    if not out.any():
        rows.append(_row("outliers dropped", "no point beyond 3 robust SDs", None, full))
    elif kept < full.form.n_params + 2:
        rows.append(_row("outliers dropped", "too few points would remain", None, full))
    else:
        note = f"{int(out.sum())} point(s) beyond {OUTLIER_Z:g} robust SDs dropped"
        rows.append(_row("outliers dropped", note, refit(xs[:, ~out], y[~out], "huber"), full))
    top, note = largest_scale_mask(xs[0])
    if xs.shape[1] - int(top.sum()) < full.form.n_params + 2 or np.unique(xs[0, ~top]).size < 3:
        rows.append(_row("largest scale dropped", "too few scales would remain", None, full))
    else:
        rows.append(_row("largest scale dropped", note, refit(xs[:, ~top], y[~top], "huber"), full))
    return rows


def grid_refit(full: FitResult, starts: np.ndarray | None) -> Refit:
    """A refit function: from the baseline optimum plus every GRID_STRIDE-th start of ``starts``
    (None: of each subset's own data-adapted grid). A variant's optimum is usually near the
    baseline's; the thinned grid still covers the space for one that moved far."""

    def refit(xs: np.ndarray, y: np.ndarray, loss: Loss) -> FitResult:
        grid = starts if starts is not None else full.form.start_grid(np.log(xs), np.log(y))
        return fit(full.form, xs, y, loss=loss, starts=np.vstack([full.theta, grid[::GRID_STRIDE]]))

    return refit
