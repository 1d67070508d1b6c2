"""Scaling-law forms as sums of power terms, fitted in log space.

Every form here is ``y = [E] + sum_i C_i * x_i ** -exponent_i`` with one term per input variable:

- ``power``: y = E + A x^-alpha (x = parameters, data or compute);
- ``power`` without offset: y = A x^-alpha (Kaplan et al.'s form; E fixed at 0);
- ``chinchilla``: L = E + A / N^alpha + B / D^beta.

Coefficients are log-parameterised (E = exp(e), A = exp(a), ...) so the prediction is a logsumexp of
linear terms in log x; that keeps every coefficient positive and the fit well conditioned across the
many orders of magnitude that N and D span.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

COEF_NAMES = ("A", "B")
EXPONENT_NAMES = ("alpha", "beta")

# Exponent starts: denser at small values, where vision-model exponents tend to sit.
EXPONENT_STARTS = (0.0, 0.25, 0.5, 1.0, 2.0)
# E as a fraction of the smallest observed y (a decreasing law saturates below its lowest point).
OFFSET_FRACTIONS = (0.1, 0.5, 0.9)
# Each term's size at the median x, as log-multiples of the median y.
TERM_LOG_SCALES = (-4.0, -1.0, 2.0)


@dataclass(frozen=True)
class Form:
    """A sum of ``variables`` power terms, with an irreducible offset E when ``offset`` is true."""

    name: str
    variables: int
    offset: bool

    @property
    def param_names(self) -> tuple[str, ...]:
        """Natural parameter names in theta order: E first (if any), then coefficients, then exponents."""
        head = ("E",) if self.offset else ()
        return head + COEF_NAMES[: self.variables] + EXPONENT_NAMES[: self.variables]

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def _split(self, theta: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """(e, log-coefficients, exponents) from a theta vector."""
        k = self.variables
        start = 1 if self.offset else 0
        e = theta[0] if self.offset else None
        return e, theta[start : start + k], theta[start + k : start + 2 * k]

    def design(self, logx: np.ndarray) -> np.ndarray:
        """Tensor G (n_params x terms x n) with terms = theta . G, so the terms are linear in theta.

        Row t of the terms is e (the offset) or a_i - alpha_i log x_i; precomputing G makes both the
        prediction and its gradient one matrix product each.
        """
        k, n = logx.shape
        m = k + int(self.offset)
        g = np.zeros((self.n_params, m, n))
        first = int(self.offset)
        if self.offset:
            g[0, 0] = 1.0
        for i in range(k):
            g[first + i, first + i] = 1.0
            g[first + k + i, first + i] = -logx[i]
        return g

    def log_predict(self, theta: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log y_hat, softmax weights of the terms) for a design tensor from ``design``.

        d log y_hat / d theta_p = sum_t weights[t] * G[p, t], which is how the objective's gradient is
        formed without building a Jacobian.
        """
        terms = (theta @ g.reshape(g.shape[0], -1)).reshape(g.shape[1:])
        top = terms.max(axis=0)
        ex = np.exp(terms - top)
        total = ex.sum(axis=0)
        return top + np.log(total), ex / total

    def to_params(self, theta: np.ndarray) -> dict[str, float]:
        """Natural parameters (E, A, B as plain values; exponents as they are)."""
        e, logc, expo = self._split(np.asarray(theta, dtype=float))
        with np.errstate(over="ignore"):  # a runaway start's coefficient is inf, and judged as such
            values = ([float(np.exp(e))] if e is not None else []) + list(np.exp(logc)) + list(expo)
        return {name: float(v) for name, v in zip(self.param_names, values)}

    def to_theta(self, params: dict[str, float]) -> np.ndarray:
        """Inverse of ``to_params``; coefficients must be positive."""
        k = self.variables
        head = [np.log(params["E"])] if self.offset else []
        coefs = [np.log(params[n]) for n in COEF_NAMES[:k]]
        return np.array(head + coefs + [params[n] for n in EXPONENT_NAMES[:k]], dtype=float)

    def predict(self, params: dict[str, float], xs: np.ndarray) -> np.ndarray:
        """y for ``xs`` (variables x n) in natural units."""
        return self.predict_many({k: np.array([v]) for k, v in params.items()}, xs)[0]

    def predict_many(self, samples: dict[str, np.ndarray], xs: np.ndarray) -> np.ndarray:
        """Predictions (replicates x n) for parameter arrays, e.g. bootstrap replicates."""
        xs = np.atleast_2d(np.asarray(xs, dtype=float))
        y = np.zeros((len(samples[self.param_names[-1]]), xs.shape[1]))
        if self.offset:
            y += samples["E"][:, None]
        with np.errstate(over="ignore", invalid="ignore"):  # a wild bootstrap replicate predicts inf or nan
            for i in range(self.variables):
                coef, expo = samples[COEF_NAMES[i]][:, None], samples[EXPONENT_NAMES[i]][:, None]
                y += coef * xs[i][None, :] ** -expo
        return y

    def start_grid(self, logx: np.ndarray, logy: np.ndarray) -> np.ndarray:
        """Data-adapted multi-start grid in theta space (rows are starts).

        Scale-free: E starts at fractions of min y; each term starts at a multiple of median y at the
        median x for every exponent start. Power: 3 x 15 = 45 starts; Chinchilla: 3 x 15 x 15 = 675.
        On Epoch's Chinchilla data it reaches the same optimum as Epoch's 4,500-start grid.
        """
        y_min, y_med = float(np.exp(logy.min())), float(np.median(logy))
        per_term = []
        for i in range(self.variables):
            x_med = float(np.median(logx[i]))
            per_term.append(
                [(y_med + s + p * x_med, p) for p, s in product(EXPONENT_STARTS, TERM_LOG_SCALES)]
            )
        offsets = [np.log(f * y_min) for f in OFFSET_FRACTIONS] if self.offset else [None]
        rows = []
        for e, terms in product(offsets, product(*per_term)):
            logc = [t[0] for t in terms]
            expo = [t[1] for t in terms]
            rows.append(([e] if e is not None else []) + logc + expo)
        return np.array(rows, dtype=float)

    def epoch_grid(self) -> np.ndarray:
        """Epoch AI's absolute grid (e in -1..1, a and b in 0..25, exponents in 0..2): 4,500 starts for
        Chinchilla. Suits y of order 1 with x between about 1e6 and 1e13."""
        e_vals = np.arange(-1.0, 1.01, 0.5)
        c_vals = np.arange(0.0, 25.1, 5.0)
        x_vals = np.arange(0.0, 2.01, 0.5)
        k = self.variables
        rows = []
        offsets = e_vals if self.offset else [None]
        for e in offsets:
            for coefs in product(c_vals, repeat=k):
                for expo in product(x_vals, repeat=k):
                    rows.append(([e] if e is not None else []) + list(coefs) + list(expo))
        return np.array(rows, dtype=float)


POWER = Form("power", variables=1, offset=True)
POWER_NO_OFFSET = Form("power", variables=1, offset=False)
CHINCHILLA = Form("chinchilla", variables=2, offset=True)


def form_for(name: str, offset: bool = True) -> Form:
    """The form called ``name`` (``power`` or ``chinchilla``)."""
    if name == "power":
        return POWER if offset else POWER_NO_OFFSET
    if name == "chinchilla":
        if not offset:
            return Form("chinchilla", variables=2, offset=False)
        return CHINCHILLA
    raise ValueError(f"unknown form {name!r}")
