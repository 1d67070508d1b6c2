"""Bootstrap over runs: resample rows with replacement, refit, and read CIs off the replicates.

Each replicate starts from the full-data optimum plus a few random perturbations of it rather than
from the full start grid (Epoch's 4,500-start grid per replicate would take hours for 1,000
replicates). The resampled optimum lies near the full-data one, so these starts find it; a replicate
whose best start fails the convergence checks is counted as failed and left out of the intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from scaling.analysis.laws.derived import Derive
from scaling.analysis.laws.optimize import FitResult, Loss, fit, single_threaded_blas

# Random restarts around the full-data optimum, per replicate (plus the optimum itself), by number of
# input variables: a one-variable law's optimum moves little between resamples.
PERTURBED_STARTS = {1: 1, 2: 3}
# Standard deviations of the perturbations: offset e, log-coefficients, exponents.
E_JITTER, COEF_JITTER, EXPONENT_JITTER = 0.3, 0.5, 0.1

# How many failed replicates to describe in the summary.
MAX_FAILURES_LISTED = 5


def percentile(values: np.ndarray | list[float], q: float | list[float], axis: int | None = None) -> np.ndarray:
    """``np.percentile`` (linear interpolation), except at an infinite replicate: numpy interpolates towards it
    as inf - inf, NaN, which reads as "no interval" where the interval is unbounded. A replicate of a poorly
    identified law can overflow a coefficient (A ~ 1e300 -> inf); the percentile at or next to it is that
    infinity."""
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        linear = np.percentile(values, q, axis=axis)
    lower = np.percentile(values, q, axis=axis, method="lower")
    higher = np.percentile(values, q, axis=axis, method="higher")
    return np.where(np.isposinf(higher), higher, np.where(np.isneginf(lower), lower, linear))


@dataclass
class BootstrapResult:
    """Natural parameters and derived quantities of every converged replicate."""

    samples: dict[str, np.ndarray]
    n_replicates: int
    n_failed: int
    n_degenerate: int
    seed: int | None
    starts_per_replicate: int
    failures: list[str]

    def ci(self, level: float = 0.95) -> dict[str, list[float]]:
        """Percentile intervals, one [low, high] per parameter or derived quantity; an end is infinite where
        the replicates beyond it are (the interval is unbounded there)."""
        q = [50 * (1 - level), 50 * (1 + level)]
        return {k: [float(e) for e in percentile(v, q)] if v.size else [np.nan, np.nan]
                for k, v in self.samples.items()}

    def se(self) -> dict[str, float]:
        """Bootstrap standard errors (sample standard deviation of the replicates); a replicate of a
        poorly identified law can put a coefficient near 1e300, which makes its SE infinite."""
        with np.errstate(over="ignore", invalid="ignore"):
            return {k: float(np.std(v, ddof=1)) if v.size > 1 else np.nan for k, v in self.samples.items()}

    def summary(self) -> dict[str, object]:
        return {
            "replicates": self.n_replicates,
            "failed": self.n_failed,
            "degenerate": self.n_degenerate,
            "used": self.n_replicates - self.n_failed - self.n_degenerate,
            "seed": self.seed,
            "starts_per_replicate": self.starts_per_replicate,
            "failures": self.failures[:MAX_FAILURES_LISTED],
        }


def perturbed_starts(
    full: FitResult, logx: np.ndarray, rng: np.random.Generator, extra: int
) -> np.ndarray:
    """The full-data optimum and ``extra`` jittered copies of it.

    An exponent moved by d also moves its log-coefficient by d * median(log x), so that the term keeps
    its size at the median x and the start stays near the data.
    """
    form, theta = full.form, full.theta
    k, first = form.variables, int(form.offset)
    rows = [theta]
    for _ in range(extra):
        t = theta.copy()
        if form.offset:
            t[0] += rng.normal(0, E_JITTER)
        d = rng.normal(0, EXPONENT_JITTER, size=k)
        t[first + k : first + 2 * k] += d
        t[first : first + k] += d * np.median(logx, axis=1) + rng.normal(0, COEF_JITTER, size=k)
        rows.append(t)
    return np.array(rows)


def distinct_enough(xs: np.ndarray, need: int) -> bool:
    """Whether every input variable has at least ``need`` distinct values."""
    return all(np.unique(row).size >= need for row in xs)


def bootstrap(
    full: FitResult,
    xs: np.ndarray,
    y: np.ndarray,
    n: int,
    *,
    seed: int | None = None,
    derive: Derive | None = None,
    loss: Loss = "huber",
    min_distinct: int = 3,
    extra_starts: int | None = None,
) -> BootstrapResult:
    """Refit ``n`` row-resamples of (xs, y), starting from ``full``'s optimum.

    ``derive(params)`` adds derived quantities (exponent ratios, a prediction at a target scale),
    computed from the same replicates as the parameters. ``extra_starts`` perturbed starts join the
    full-data optimum (default: PERTURBED_STARTS for the form). Resamples with fewer than
    ``min_distinct`` distinct values of an input are degenerate (the law is not identified) and are
    not fitted.
    """
    xs = np.atleast_2d(np.asarray(xs, dtype=float))
    y = np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    logx = np.log(xs)
    if extra_starts is None:
        extra_starts = PERTURBED_STARTS[full.form.variables]
    rows: list[dict[str, float]] = []
    failures: list[str] = []
    degenerate = 0
    with single_threaded_blas():
        for _ in range(n):
            idx = rng.integers(0, y.size, size=y.size)
            if not distinct_enough(xs[:, idx], min_distinct):
                degenerate += 1
                continue
            starts = perturbed_starts(full, logx, rng, extra_starts)
            res = fit(full.form, xs[:, idx], y[idx], loss=loss, starts=starts)
            if not res.converged:
                failures.append(
                    f"{res.iterations} iterations, gradient norm {res.grad_norm:.3g}, {res.message}"
                )
                continue
            params = res.params
            rows.append(params | (derive(params) if derive else {}))
    keys = list(full.params) + (list(derive(full.params)) if derive else [])
    samples = {k: np.array([r[k] for r in rows], dtype=float) for k in keys}
    return BootstrapResult(samples, n, len(failures), degenerate, seed, 1 + extra_starts, failures)
