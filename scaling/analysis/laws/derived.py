"""Quantities derived from fitted parameters, computed per bootstrap replicate for their CIs.

Chinchilla under C = 6 N D: N_opt grows as C^a with a = beta / (alpha + beta) and D_opt as C^b with
b = alpha / (alpha + beta). With a target scale, ``prediction`` is the law's value there.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from scaling.analysis.laws.forms import Form

Derive = Callable[[dict[str, float]], dict[str, float]]


def deriver(form: Form, target: tuple[float, ...] | None) -> Derive | None:
    """The function mapping a parameter dict to its derived quantities (None if there are none)."""
    if target is not None and len(target) != form.variables:
        names = "N,D" if form.variables == 2 else "X"
        raise ValueError(f"target needs {form.variables} value(s) ({names}), got {len(target)}")
    if form.variables == 1 and target is None:
        return None
    xs = None if target is None else np.array(target, dtype=float).reshape(-1, 1)

    def derive(params: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        if form.variables == 2:
            total = params["alpha"] + params["beta"]
            out["a"] = params["beta"] / total
            out["b"] = params["alpha"] / total
        if xs is not None:
            out["prediction"] = float(form.predict(params, xs)[0])
        return out

    return derive
