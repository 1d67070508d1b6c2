"""IsoFLOP profiles (Approach 2) recover a known allocation exponent and refuse edge minima."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scaling.analysis.laws.forms import CHINCHILLA
from scaling.analysis.laws.isoflop import fit_isoflop, optimum_intervals
from scaling.core.errors import UserError
from tests.helpers import CHINCHILLA_LAW as LAW, ISOFLOP_EXPONENT as EXPONENT, isoflop_n_opt as n_opt

BUDGETS = np.geomspace(1e18, 1e22, 5)


def profiles(noise: float = 0.0, seed: int = 0, span: tuple[float, float] = (1 / 8, 8)) -> pd.DataFrame:
    """Seven sizes per budget, log-spaced over ``span`` times the true optimum."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in BUDGETS:
        for n in n_opt(c) * np.geomspace(*span, 7):
            loss = CHINCHILLA.predict(LAW, np.array([[n], [c / (6 * n)]]))[0]
            rows.append({"N": n, "C": c, "loss": loss * np.exp(rng.normal(0, noise))})
    return pd.DataFrame(rows)


def test_recovers_exponent_from_clean_profiles() -> None:
    df = profiles()
    res = fit_isoflop(df["N"], df["loss"], df["C"])
    # A parabola in log N only approximates the profile; its vertex is off by a constant factor at
    # every budget, which moves k but not the exponent.
    assert res.a == pytest.approx(EXPONENT, abs=0.005)
    assert all(p.n_min < p.n_opt < p.n_max for p in res.profiles)


def test_cli_interval_covers_exponent_with_noise(fit_json, tmp_path) -> None:
    path = tmp_path / "iso.csv"
    profiles(noise=0.005, seed=1).to_csv(path, index=False)
    out = fit_json([str(path), "--form", "isoflop", "--x", "N", "--y", "loss", "--group", "C",
                    "--bootstrap", "200", "--target", "1e24"])
    lo, hi = out["ci"]["a"]
    assert lo < EXPONENT < hi
    assert set(out["params"]) == {"a", "k"}
    assert len(out["profiles"]) == len(BUDGETS)
    assert out["derived"]["prediction"] == pytest.approx(out["params"]["k"] * 1e24 ** out["params"]["a"])


def _one_budget_one_sided() -> pd.DataFrame:
    """The clean profiles, but budget 3 of 5 sampled only below its optimum."""
    df = profiles()
    one_sided = profiles(span=(1 / 64, 1 / 2))
    return pd.concat([df[df["C"] != BUDGETS[2]], one_sided[one_sided["C"] == BUDGETS[2]]])


def test_a_budget_whose_minimum_is_outside_its_sizes_is_left_out_with_a_warning(fit_json, tmp_path) -> None:
    df = _one_budget_one_sided()
    res = fit_isoflop(df["N"], df["loss"], df["C"])
    assert [p.budget for p in res.profiles] == [c for c in BUDGETS if c != BUDGETS[2]]
    assert res.a == pytest.approx(EXPONENT, abs=0.005)  # the other four still carry the law
    (why,) = res.skipped
    assert why.startswith(f"budget {BUDGETS[2]:.3g}: the loss minimum") and why.endswith("left out of the fit")
    path = tmp_path / "iso.csv"
    df.to_csv(path, index=False)
    out = fit_json([str(path), "--form", "isoflop", "--x", "N", "--y", "loss", "--group", "C", "--bootstrap", "50"])
    assert len(out["profiles"]) == 4 and why in out["warnings"]
    assert out["bootstrap"]["failed"] < 50


def test_strict_budgets_refuse_it(user_error, tmp_path) -> None:
    df = _one_budget_one_sided()
    with pytest.raises(UserError, match="outside the sampled sizes"):
        fit_isoflop(df["N"], df["loss"], df["C"], strict=True)
    path = tmp_path / "iso.csv"
    df.to_csv(path, index=False)
    msg = user_error(["fit", str(path), "--form", "isoflop", "--x", "N", "--y", "loss", "--group", "C",
                      "--strict-budgets"])
    assert f"budget {BUDGETS[2]:.3g}" in msg and "outside the sampled sizes" in msg


def test_too_few_budgets_left_is_refused_naming_why() -> None:
    df = _one_budget_one_sided()
    df = df[df["C"].isin(BUDGETS[1:4])]  # three budgets, one of them unusable
    with pytest.raises(UserError, match=r"2 compute budget\(s\) with a loss minimum .* outside the sampled sizes"):
        fit_isoflop(df["N"], df["loss"], df["C"])


def test_each_budgets_optimum_gets_an_interval_that_covers_it() -> None:
    df = profiles(noise=0.003, seed=2)
    res = fit_isoflop(df["N"], df["loss"], df["C"])
    intervals = optimum_intervals(df["N"], df["loss"], df["C"], 200, seed=0)
    assert sorted(intervals) == pytest.approx(sorted(BUDGETS))
    for p in res.profiles:
        lo, hi, failed = intervals[p.budget]
        assert lo < p.n_opt < hi and hi / lo < 4 and failed < 0.1
