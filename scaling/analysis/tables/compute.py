"""Compute as a study's axis: the runs that are compute-efficient for a metric, and, for an isoFLOP grid
(``train.flops_budget`` as an axis), each budget's loss-optimal tokenizer size with its bootstrap interval and
the law N_opt = k C^a through those optima, extrapolated to a larger budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.analysis.laws.isoflop import Profile, optimum_intervals, profiles
from scaling.analysis.laws.outcome import FitOutcome, jsonable
from scaling.analysis.laws.request import FitRequest
from scaling.analysis.laws.words import describe
from scaling.analysis.tables import read
from scaling.analysis.tables.fit import fit_table
from scaling.analysis.tables.runs import higher_is_better
from scaling.core.errors import UserError

FLOPS = "train/flops"  # what a run spent (logged at every log step; its last value)
BUDGET = "train.flops_budget"  # what an isoFLOP trial was given
# The metric whose optimum over sizes defines the compute-optimal tokenizer: the first one the runs have.
OPTIMAL_METRICS = ("val/recon_loss", "eval/rfid")
EXTRAPOLATE = 10.0  # without a target, N_opt is predicted at this many times the largest budget
SAME_COMPUTE = 0.05  # runs whose FLOPs differ by less than this share are at one compute level


def has_budgets(runs: pd.DataFrame) -> bool:
    """Whether any run names an isoFLOP budget (``train.flops_budget`` > 0)."""
    return BUDGET in runs.columns and bool(pd.to_numeric(runs[BUDGET], errors="coerce").gt(0).any())


def frontier(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The compute-efficient runs: runs within ``SAME_COMPUTE`` of each other's FLOPs are one compute level (an
    isoFLOP budget's trials differ by part of a step) and only its best counts; in order of compute, each level's
    best is kept when it is better at ``metric`` than every cheaper level's."""
    data = rows.dropna(subset=[FLOPS, metric]).sort_values(FLOPS, kind="stable")
    sign = -1.0 if higher_is_better(metric) else 1.0
    flops, values = data[FLOPS].to_numpy(dtype=float), sign * data[metric].to_numpy(dtype=float)
    level = np.cumsum(np.r_[True, flops[1:] > flops[:-1] * (1 + SAME_COMPUTE)]) if len(data) else np.array([])
    keep, best = np.zeros(len(data), dtype=bool), math.inf
    for lv in np.unique(level):
        members = np.flatnonzero(level == lv)
        top = members[np.argmin(values[members])]
        if values[top] < best:
            keep[top], best = True, values[top]
    return data[keep]


@dataclass(frozen=True)
class BudgetOptimum:
    """One budget's profile and its optimum's interval; no profile where its minimum is not inside its sizes (then
    ``left_out`` says why)."""

    budget: float
    runs: int
    sizes: int
    profile: Profile | None
    ci: tuple[float, float]
    failed_share: float  # bootstrap resamples whose profile lost its minimum
    left_out: str | None

    @property
    def n_opt(self) -> float | None:
        return self.profile.n_opt if self.profile else None

    @property
    def loss_at_opt(self) -> float | None:
        return self.profile.loss_opt if self.profile else None

    def to_dict(self) -> dict[str, object]:
        return {"budget": self.budget, "runs": self.runs, "sizes": self.sizes, "n_opt": self.n_opt, "ci": self.ci,
                "loss_at_opt": self.loss_at_opt, "failed_share": self.failed_share, "left_out": self.left_out}


@dataclass
class ComputeOptimal:
    """The compute-optimal size of one metric in one group, per budget and as a law over budgets."""

    metric: str
    group: str
    budgets: list[BudgetOptimum]
    law: FitOutcome | None  # N_opt = k C^a; None with ``why_no_law``
    why_no_law: str | None
    target: float

    def to_dict(self) -> dict[str, object]:
        return jsonable({
            "metric": self.metric, "semantic_group": self.group, "target_budget": self.target,
            "budgets": [b.to_dict() for b in self.budgets],
            "law": self.law.to_dict() if self.law else None, "why_no_law": self.why_no_law,
        })  # type: ignore[return-value]


def compute_optimal(rows: pd.DataFrame, metric: str, size: str, group: str, *, bootstrap: int, seed: int | None,
                    target: float | None = None, strict: bool = False) -> ComputeOptimal:
    """Each budget's parabola in log N, its minimum with a ``bootstrap`` interval, and the law through the minima
    (a budget whose minimum lies at an edge of its sizes is left out, named; ``strict``: refused)."""
    data = read.numeric(rows, [size, metric, BUDGET], dropna=True)
    data = data[data[BUDGET] > 0]  # runs outside the grid (a cooldown branch sets no budget)
    n, y, c = (data[col].to_numpy(dtype=float) for col in (size, metric, BUDGET))
    kept, skipped = profiles(n, y, c, strict=strict)
    by_budget = {p.budget: p for p in kept}
    intervals = optimum_intervals(n, y, c, bootstrap, seed=seed)
    budgets = []
    for budget in map(float, np.unique(c)):
        p, (lo, hi, failed) = by_budget.get(budget), intervals[budget]
        budgets.append(BudgetOptimum(budget, int((c == budget).sum()), int(np.unique(n[c == budget]).size), p,
                                     (lo, hi) if p else (math.nan, math.nan), failed, skipped.get(budget)))
    target = target or EXTRAPOLATE * float(c.max())
    request = FitRequest(form="isoflop", x=size, y=metric, group=BUDGET, target=(target,), strict=strict)
    try:
        law, why_no_law = fit_table(data, request, bootstrap=bootstrap, seed=seed), None
        law.law = describe(law, {size: "N", BUDGET: "C"})
    except UserError as e:
        law, why_no_law = None, str(e)
    return ComputeOptimal(metric, group, budgets, law, why_no_law, target)
