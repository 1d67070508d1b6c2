"""IsoFLOP profiles (Chinchilla Approach 2).

For each compute budget, a parabola of loss against log N locates the loss-minimising size N_opt;
the minimum must lie inside the sampled sizes, since a vertex outside them is an extrapolation of a
parabola, not a measured optimum. A budget without one is left out with a warning that names it (or,
``strict``, refused), so that one badly sampled budget does not sink the others. Then
log N_opt = log k + a log C is fitted by least squares over the budgets kept, giving N_opt = k C^a. The
bootstrap resamples runs within each budget kept; each budget's N_opt gets its own interval the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.analysis.laws.bootstrap import BootstrapResult, percentile
from scaling.core.errors import UserError

MIN_SIZES_PER_BUDGET = 3
MIN_BUDGETS = 3


@dataclass(frozen=True)
class Profile:
    """One budget's parabola: loss = c2 (log N)^2 + c1 log N + c0, and its minimum."""

    budget: float
    n_opt: float
    loss_opt: float
    coeffs: tuple[float, float, float]
    n_min: float
    n_max: float
    points: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "budget": self.budget,
            "n_opt": self.n_opt,
            "loss_at_opt": self.loss_opt,
            "n_min": self.n_min,
            "n_max": self.n_max,
            "points": self.points,
        }


@dataclass(frozen=True)
class IsoflopResult:
    """N_opt = k C^a over the profiles, with the sum of squared log residuals as objective."""

    a: float
    k: float
    objective: float
    profiles: list[Profile]
    skipped: tuple[str, ...] = ()  # why each budget left out has no usable profile

    @property
    def params(self) -> dict[str, float]:
        return {"a": self.a, "k": self.k}

    def n_opt(self, budget: float | np.ndarray) -> np.ndarray:
        return self.k * np.asarray(budget, dtype=float) ** self.a


def profile(budget: float, n: np.ndarray, loss: np.ndarray) -> Profile:
    """The parabola for one budget; a UserError if it has no interior minimum."""
    logn = np.log(n)
    if np.unique(logn).size < MIN_SIZES_PER_BUDGET:
        raise UserError(
            f"budget {budget:.3g}: {np.unique(logn).size} distinct model size(s); "
            f"an isoFLOP profile needs at least {MIN_SIZES_PER_BUDGET}"
        )
    c2, c1, c0 = np.polyfit(logn, loss, 2)
    if c2 <= 0:
        raise UserError(f"budget {budget:.3g}: loss is not convex in log N, so it has no minimum")
    vertex = -c1 / (2 * c2)
    lo, hi = float(np.exp(logn.min())), float(np.exp(logn.max()))
    if not logn.min() <= vertex <= logn.max():
        raise UserError(
            f"budget {budget:.3g}: the loss minimum (N = {np.exp(vertex):.3g}) lies outside the sampled "
            f"sizes [{lo:.3g}, {hi:.3g}]; sample sizes on both sides of it or drop this budget"
        )
    loss_opt = float(c0 - c1**2 / (4 * c2))
    return Profile(float(budget), float(np.exp(vertex)), loss_opt, (c2, c1, c0), lo, hi, n.size)


def _budgets(budget: np.ndarray) -> np.ndarray:
    values = np.unique(budget)
    if values.size < MIN_BUDGETS:
        raise UserError(
            f"{values.size} compute budget(s); an isoFLOP fit needs at least {MIN_BUDGETS}"
        )
    return values


def profiles(
    n: np.ndarray, loss: np.ndarray, budget: np.ndarray, *, strict: bool = False
) -> tuple[list[Profile], dict[float, str]]:
    """Every budget's profile, and, by budget, why each one without a profile was left out (``strict``: a
    UserError)."""
    kept, skipped = [], {}
    for c in np.unique(budget):
        try:
            kept.append(profile(c, n[budget == c], loss[budget == c]))
        except UserError as e:
            if strict:
                raise
            skipped[float(c)] = f"{e}; left out of the fit"
    return kept, skipped


def fit_isoflop(n: np.ndarray, loss: np.ndarray, budget: np.ndarray, *, strict: bool = False) -> IsoflopResult:
    """Profiles for every budget, then the power law through their minima (budgets without one left out)."""
    n, loss, budget = (np.asarray(v, dtype=float) for v in (n, loss, budget))
    _budgets(budget)
    kept, skipped = profiles(n, loss, budget, strict=strict)
    if len(kept) < MIN_BUDGETS:
        raise UserError(
            f"{len(kept)} compute budget(s) with a loss minimum inside their sizes; an isoFLOP fit needs at "
            f"least {MIN_BUDGETS} ({'; '.join(skipped.values())})"
        )
    logc = np.log([p.budget for p in kept])
    logn = np.log([p.n_opt for p in kept])
    a, logk = np.polyfit(logc, logn, 1)
    resid = logn - (a * logc + logk)
    return IsoflopResult(float(a), float(np.exp(logk)), float((resid**2).sum()), kept, tuple(skipped.values()))


def optimum_intervals(
    n: np.ndarray, loss: np.ndarray, budget: np.ndarray, reps: int, *, seed: int | None = None,
    level: float = 0.95,
) -> dict[float, tuple[float, float, float]]:
    """Per budget, the ``level`` percentile interval of its N_opt over ``reps`` resamples of its runs, and the
    share of resamples whose profile lost its minimum (they are left out of the interval)."""
    n, loss, budget = (np.asarray(v, dtype=float) for v in (n, loss, budget))
    rng = np.random.default_rng(seed)
    out = {}
    for c in np.unique(budget):
        idx = np.flatnonzero(budget == c)
        optima = []
        for _ in range(reps):
            pick = rng.choice(idx, size=idx.size, replace=True)
            try:
                optima.append(profile(c, n[pick], loss[pick]).n_opt)
            except UserError:
                continue
        lo, hi = (percentile(optima, [50 * (1 - level), 50 * (1 + level)]) if optima else (np.nan, np.nan))
        out[float(c)] = (float(lo), float(hi), 1 - len(optima) / reps if reps else 0.0)
    return out


def bootstrap_isoflop(
    n: np.ndarray,
    loss: np.ndarray,
    budget: np.ndarray,
    reps: int,
    *,
    seed: int | None = None,
    target: float | None = None,
    kept: list[float],
) -> BootstrapResult:
    """Resample runs within each budget the full-data fit kept (``kept``); a replicate in which one of them loses
    its minimum fails."""
    n, loss, budget = (np.asarray(v, dtype=float) for v in (n, loss, budget))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(budget == c) for c in kept]
    rows: list[dict[str, float]] = []
    failures: list[str] = []
    for _ in range(reps):
        idx = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
        try:
            res = fit_isoflop(n[idx], loss[idx], budget[idx], strict=True)
        except UserError as e:
            failures.append(str(e))
            continue
        extra = {"b": 1 - res.a}
        if target is not None:
            extra["prediction"] = float(res.n_opt(target))
        rows.append(res.params | extra)
    keys = ["a", "k", "b"] + (["prediction"] if target is not None else [])
    samples = {k: np.array([r[k] for r in rows], dtype=float) for k in keys}
    return BootstrapResult(samples, reps, len(failures), 0, seed, 1, failures)
