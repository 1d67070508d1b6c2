"""Conclusions only where the data support them: a fit that is no power law says so instead of an exponent."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from scaling.analysis.laws.bootstrap import percentile
from scaling.analysis.laws.quality import warnings_for
from scaling.analysis.laws.request import FitRequest
from scaling.analysis.laws.words import describe, num
from scaling.analysis.tables.fit import fit_table

SIZES = np.array([1e6, 2e6, 4e6, 8e6, 16e6])


def _fit(y: list[float]):
    return fit_table(pd.DataFrame({"N": SIZES, "y": y}), FitRequest(form="power", x="N", y="y"), bootstrap=50, seed=0)


@pytest.mark.parametrize("y,reason", [
    ([10.0, 5.01, 5.0, 5.02, 4.99], "the exponent alpha ran to"),  # a step at the smallest size
    ([5.0, 5.03, 4.98, 5.01, 5.0], "moves less than the points scatter"),  # flat
], ids=["step", "flat"])
def test_no_power_law_is_said_in_words_not_printed_as_an_exponent(y: list[float], reason: str) -> None:
    """The tiny study printed "AR val loss rises as N^52.12 +- 0.28" and "alpha = 124.71 [124.50, 124.90]" from
    fits like these."""
    out = _fit(y)
    assert out.no_law is not None and reason in out.no_law
    assert out.law.startswith("y: no power law:") and "N^" not in out.law
    assert out.to_dict()["no_law"] == out.no_law


def test_a_power_law_is_stated() -> None:
    noise = 1 + 0.01 * np.array([1, -1, 0.5, -0.5, 0])
    out = _fit(list(1 + 50 * SIZES ** -0.3 * noise))
    assert out.no_law is None and out.to_dict()["no_law"] is None
    assert out.law.startswith("y falls as N^-0.3")


def test_bootstrap_replicates_that_collapse_are_no_interval() -> None:
    """Replicates that refit to a handful of identical answers give a tight interval that is no uncertainty."""
    noise = 1 + 0.01 * np.array([1, -1, 0.5, -0.5, 0])
    out = _fit(list(1 + 50 * SIZES ** -0.3 * noise))
    assert not any("collapse" in w for w in warnings_for(out))
    alpha = np.where(np.arange(50) % 2, 124.71, 124.5)  # two answers in 50 replicates
    out.boot = replace(out.boot, samples={**out.boot.samples, "alpha": alpha})
    assert "the bootstrap replicates of alpha collapse onto 2 answer(s) of 50: its interval is not an uncertainty" \
        in warnings_for(out)


def test_a_floor_at_its_bound_is_said_to_be_zero_not_given_an_interval() -> None:
    """The compute study's (N, D) law printed "towards a floor of 1.34e-121 [8.27e-122, 2.22e-121]"."""
    noise = 1 + 0.01 * np.array([1, -1, 0.5, -0.5, 0])
    out = _fit(list(1 + 50 * SIZES ** -0.3 * noise))
    assert "floor of ~0" not in out.law and not any("at its bound" in w for w in warnings_for(out))
    pinned = np.full(50, 1e-121) * np.linspace(0.6, 1.7, 50)  # every replicate at the bound, far below the data
    out.params["E"] = 1.3e-121
    out.boot = replace(out.boot, samples={**out.boot.samples, "E": pinned})
    assert describe(out).endswith("towards a floor of ~0."), describe(out)
    assert "the floor E is at its bound (~0): the data show no floor" in warnings_for(out)


def test_a_replicate_that_runs_to_infinity_makes_an_unbounded_interval() -> None:
    """The tiny study's replicates overflowed A to inf; numpy's percentile interpolated inf - inf to NaN, and the
    interval, printed as none, escaped the "poorly determined" warning."""
    noise = 1 + 0.01 * np.array([1, -1, 0.5, -0.5, 0])
    out = _fit(list(1 + 50 * SIZES ** -0.3 * noise))
    alpha = np.random.default_rng(0).normal(0.3, 0.01, 50)
    alpha[:3] = np.inf  # 3 of 50 beyond the 97.5th percentile
    out.boot = replace(out.boot, samples={**out.boot.samples, "alpha": alpha})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in subtract"
        lo, hi = out.ci("alpha")
        notes = warnings_for(out)
    assert 0.25 < lo < 0.3 and hi == np.inf
    assert f"the exponent alpha is poorly determined: {num(out.params['alpha'])}, 95% interval [{num(lo)}, inf)" \
        in notes, notes


@pytest.mark.parametrize("q", [2.5, [2.5, 97.5], [0, 50, 100]])
def test_percentile_is_numpys_where_every_replicate_is_finite(q: float | list[float]) -> None:
    values = np.random.default_rng(1).lognormal(0, 3, (41, 7))
    np.testing.assert_array_equal(percentile(values, q, axis=0), np.percentile(values, q, axis=0))
    assert (percentile(np.r_[1.0, 2.0, -np.inf, np.inf], [0, 20, 50, 80, 100]) == [-np.inf, -np.inf, 1.5, np.inf,
                                                                                   np.inf]).all()
