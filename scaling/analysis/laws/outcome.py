"""A fit's outcome: the fitted law with its intervals, diagnostics and warnings, and its JSON form (the
stable interface of ``scaling fit`` and ``fits.json``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from scaling.analysis.laws.bootstrap import BootstrapResult
from scaling.analysis.laws.isoflop import IsoflopResult
from scaling.analysis.laws.optimize import FitResult
from scaling.analysis.laws.request import FitRequest


@dataclass
class FitOutcome:
    """A fitted law with its intervals, diagnostics and warnings."""

    request: FitRequest
    result: FitResult | IsoflopResult
    params: dict[str, float]
    objective: float
    n_points: int
    converged: bool
    xs: np.ndarray
    y: np.ndarray
    derived: dict[str, float] = field(default_factory=dict)
    boot: BootstrapResult | None = None
    diagnostics: dict[str, object] = field(default_factory=dict)
    sensitivity: list[dict[str, object]] | None = None
    warnings: list[str] = field(default_factory=list)
    law: str = ""
    no_law: str | None = None  # why the fit is no finding (``quality.no_law``); None: it may be stated

    def ci(self, key: str) -> tuple[float, float]:
        """95% interval of a parameter or derived quantity (NaNs without a bootstrap)."""
        if self.boot is None or key not in self.boot.samples:
            return (math.nan, math.nan)
        lo, hi = self.boot.ci()[key]
        return (lo, hi)

    def se(self, key: str) -> float:
        if self.boot is None or key not in self.boot.samples:
            return math.nan
        return self.boot.se()[key]

    def to_dict(self) -> dict[str, object]:
        """The JSON object ``scaling fit`` prints: ``params``, ``ci``, ``objective``, ``n_points`` and
        ``converged`` are the stable keys; the rest explain them."""
        s = self.request
        out: dict[str, object] = {
            "form": s.form,
            "x": s.x,
            "x2": s.x2,
            "y": s.y,
            "group": s.group,
            "offset": s.offset,
            "loss": s.loss,
            "params": self.params,
            "ci": {k: list(self.ci(k)) for k in self.params},
            "se": {k: self.se(k) for k in self.params},
            "objective": self.objective,
            "n_points": self.n_points,
            "converged": self.converged,
            "derived": self.derived,
            "derived_ci": {k: list(self.ci(k)) for k in self.derived},
            "target": list(s.target) if s.target else None,
            "bootstrap": self.boot.summary() if self.boot else None,
            "convergence": self.diagnostics,
            "law": self.law,
            "no_law": self.no_law,
            "warnings": self.warnings,
        }
        if isinstance(self.result, IsoflopResult):
            out["profiles"] = [p.to_dict() for p in self.result.profiles]
        if self.sensitivity is not None:
            out["sensitivity"] = self.sensitivity
        return jsonable(out)  # type: ignore[return-value]


def jsonable(value: object) -> object:
    """``value`` with numpy scalars as Python floats and NaN/inf as None (JSON has no NaN).

    Floats stay full precision: ``json.dumps`` writes repr(float), which round-trips exactly.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
