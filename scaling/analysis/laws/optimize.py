"""Multi-start robust fitting of a form, with convergence diagnostics.

The objective is the Huber loss (delta 1e-3) of log residuals, SUMMED over points: a mean shrinks the
objective and its gradient by 1/n, so L-BFGS-B meets its tolerances at once and stops at its start
(the bug Besiroglu et al. 2024 found in the original Chinchilla fit). Each fit reports its iterations,
its final gradient norm and how far apart the best minima from different starts are.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, NamedTuple

import numpy as np
from scipy.optimize import minimize

from scaling.analysis.laws.forms import Form

Loss = Literal["huber", "squared"]
HUBER_DELTA = 1e-3
# Minima whose objective is within this relative distance of the best count as "equally good".
NEAR_BEST_RTOL = 1e-4
# An end point closer than this to its start (in theta units), or reached in <= 2 iterations, is
# "at its start"; flagged as stuck when it is not a minimum.
STUCK_MOVE = 1e-8
# Largest acceptable final gradient norm, as a fraction of one typical point's largest possible pull
# (Huber: delta times the norm of d log y_hat / d theta at that point).
GRAD_TOLERANCE = 1e-3
# Restarts from the best point when its gradient is still too large.
POLISH = 3
NUDGE = 1e-4  # relative step off a kink for a restart that could not move (see _polish)
# Below this the gradient norm is as small as float64 arithmetic on log residuals allows.
MIN_GRAD = 1e-9
# Tighter than scipy's defaults (ftol 2.2e-9, gtol 1e-5): with those, bootstrap replicates of the
# Chinchilla fit stopped with gradient norms of 5-17% of the objective, short of their minima.
OPTIONS = {"ftol": 1e-13, "gtol": 1e-9, "maxiter": 5000}

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass
class FitResult:
    """The best of several L-BFGS-B runs and what is known about how well it converged."""

    form: Form
    theta: np.ndarray
    objective: float
    n_points: int
    iterations: int
    grad_norm: float
    converged: bool
    stuck_at_start: bool
    message: str
    n_starts: int
    n_near_best: int
    spread: dict[str, float] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, float]:
        return self.form.to_params(self.theta)

    def diagnostics(self) -> dict[str, object]:
        """Convergence facts for JSON output."""
        return {
            "iterations": self.iterations,
            "grad_norm": self.grad_norm,
            "stuck_at_start": self.stuck_at_start,
            "optimizer_message": self.message,
            "starts": self.n_starts,
            "starts_near_best": self.n_near_best,
            "spread_of_best_minima": self.spread,
        }


def objective(form: Form, logx: np.ndarray, logy: np.ndarray, loss: Loss = "huber") -> Objective:
    """Summed loss of log residuals and its gradient, as a function of theta."""
    g = form.design(logx)
    flat = g.reshape(g.shape[0], -1)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        pred, weights = form.log_predict(theta, g)
        r = logy - pred
        # Huber's derivative is r clipped to +-delta, and its value is dr * (r - dr / 2) both inside
        # and outside the quadratic zone; squared error is the same with dr = r.
        dr = np.minimum(np.maximum(r, -HUBER_DELTA), HUBER_DELTA) if loss == "huber" else r
        value = float(np.dot(dr, r - 0.5 * dr))
        return value, -(flat @ (weights * dr).ravel())

    return fun


def point_pull(form: Form, theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, loss: Loss) -> float:
    """The gradient one typical point can contribute: the largest loss derivative (delta for Huber,
    the RMS residual for squared error) times the median norm of d log y_hat / d theta.

    Scaling the convergence check by this, not by the objective, keeps it meaningful when most
    residuals sit on Huber's linear part, where the objective says little about the gradient's size.
    """
    g = form.design(logx)
    pred, weights = form.log_predict(theta, g)
    per_point = np.linalg.norm(np.einsum("ptn,tn->pn", g, weights), axis=0)
    size = HUBER_DELTA if loss == "huber" else float(np.sqrt(np.mean((logy - pred) ** 2)))
    return size * float(np.median(per_point))


@functools.cache
def _blas_controller() -> object | None:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it fits are correct, only slower on busy machines
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS on one thread: L-BFGS-B makes tiny BLAS calls, and OpenBLAS threads contending for
    a busy 2-core machine made each start about 15x slower in measurements here."""
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):  # type: ignore[attr-defined]
        yield


class _Run(NamedTuple):
    start: np.ndarray
    theta: np.ndarray
    value: float
    iterations: int
    message: str


def _run(fun: Objective, x0: np.ndarray) -> _Run:
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", options=OPTIONS)
    return _Run(x0, res.x, float(res.fun), int(res.nit), str(res.message))


class Check(NamedTuple):
    converged: bool
    stuck_at_start: bool
    grad_norm: float


def gradient_limit(
    form: Form, theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, loss: Loss
) -> float:
    """The gradient norm below which a point counts as a minimum (see GRAD_TOLERANCE)."""
    return max(GRAD_TOLERANCE * point_pull(form, theta, logx, logy, loss), MIN_GRAD)


def judge(
    form: Form, theta: np.ndarray, start: np.ndarray, iterations: int,
    logx: np.ndarray, logy: np.ndarray, loss: Loss = "huber",
) -> Check:
    """Whether an optimiser's end point ``theta`` is a minimum of the summed objective.

    The gradient decides, not the optimiser's own verdict: a line search that gives up (ABNORMAL)
    where the gradient is tiny has converged, and one that stops early because its tolerances were
    met too soon (the mean-objective bug) has not. ``stuck_at_start`` marks the second case when the
    end point is at or next to its start.
    """
    grad_norm = float(np.linalg.norm(objective(form, logx, logy, loss)(theta)[1]))
    small = grad_norm <= gradient_limit(form, theta, logx, logy, loss)
    near_start = iterations <= 2 or float(np.linalg.norm(theta - start)) < STUCK_MOVE
    return Check(small and iterations < OPTIONS["maxiter"], near_start and not small, grad_norm)


def _polish(fun: Objective, best: _Run, limit: float) -> _Run:
    """Restart L-BFGS-B from ``best`` while its gradient is above ``limit`` (at most POLISH times).

    L-BFGS-B sometimes stalls where many residuals sit at Huber's kinks; a restart discards its
    curvature memory and usually finishes the descent. A run that cannot take even its first step
    there (its line search gives up at once, as SciPy 1.17's does) restarts from a point nudged off
    the kink, deterministically, and counts only if it ends lower.
    """
    for attempt in range(POLISH):
        if float(np.linalg.norm(fun(best.theta)[1])) <= limit:
            break
        nudge = NUDGE * attempt * np.where(np.arange(best.theta.size) % 2, 1.0, -1.0)
        again = _run(fun, best.theta + nudge * np.maximum(1.0, np.abs(best.theta)))
        if again.value > best.value:
            continue
        best = _Run(best.start, again.theta, again.value, best.iterations + again.iterations, again.message)
    return best


def _spread(form: Form, thetas: list[np.ndarray], best: np.ndarray) -> dict[str, float]:
    """Relative range of each natural parameter among the equally good minima."""
    if len(thetas) < 2:
        return {name: 0.0 for name in form.param_names}
    values = np.array([list(form.to_params(t).values()) for t in thetas])
    ref = np.abs(np.array(list(form.to_params(best).values())))
    with np.errstate(invalid="ignore"):  # inf - inf or inf / inf where a coefficient ran away: nan
        span = values.max(axis=0) - values.min(axis=0)
        return {n: float(s / r) if r > 0 else float(s) for n, s, r in zip(form.param_names, span, ref)}


def fit(
    form: Form,
    xs: np.ndarray,
    y: np.ndarray,
    *,
    loss: Loss = "huber",
    starts: np.ndarray | None = None,
) -> FitResult:
    """Fit ``form`` to ``xs`` (variables x n, positive) and ``y`` (n, positive) from every start.

    ``starts`` defaults to the form's data-adapted grid; pass ``form.epoch_grid()`` for Epoch's grid.
    """
    logx = np.log(np.atleast_2d(np.asarray(xs, dtype=float)))
    logy = np.log(np.asarray(y, dtype=float))
    fun = objective(form, logx, logy, loss)
    grid = form.start_grid(logx, logy) if starts is None else np.atleast_2d(starts)
    with single_threaded_blas():
        runs = [_run(fun, x0) for x0 in grid]
        best = min(runs, key=lambda r: r.value)
        tol = max(abs(best.value) * NEAR_BEST_RTOL, 1e-15)
        near = [r.theta for r in runs if r.value <= best.value + tol]
        best = _polish(fun, best, gradient_limit(form, best.theta, logx, logy, loss))
    check = judge(form, best.theta, best.start, best.iterations, logx, logy, loss)
    return FitResult(
        form=form,
        theta=best.theta,
        objective=best.value,
        n_points=logy.size,
        iterations=best.iterations,
        grad_norm=check.grad_norm,
        converged=check.converged,
        stuck_at_start=check.stuck_at_start,
        message=best.message,
        n_starts=len(grid),
        n_near_best=len(near),
        spread=_spread(form, near, best.theta),
    )
