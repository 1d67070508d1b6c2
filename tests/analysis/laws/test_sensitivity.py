"""The sensitivity report: outliers found and dropped, largest scale dropped, squared error."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.analysis.laws.forms import POWER
from scaling.analysis.laws.optimize import fit
from scaling.analysis.laws.sensitivity import grid_refit, largest_scale_mask, outlier_mask, sensitivity

TRUTH = {"E": 0.5, "A": 40.0, "alpha": 0.3}


def test_outlier_is_dropped_and_the_exponent_recovers() -> None:
    x = np.repeat(np.geomspace(1e6, 1e9, 8), 3)
    rng = np.random.default_rng(0)
    clean = POWER.predict(TRUTH, x[None]) * np.exp(rng.normal(0, 0.01, x.size))
    y = clean.copy()
    y[5] *= 1.5  # one broken run
    base = fit(POWER, x[None], y)
    flagged = np.flatnonzero(outlier_mask(base, x[None], y))
    assert 5 in flagged and len(flagged) <= 2  # the broken run, perhaps one noisy neighbour
    rows = {r["variant"]: r for r in sensitivity(base, x[None], y, grid_refit(base, None))}
    assert set(rows) == {"baseline", "squared error", "outliers dropped", "largest scale dropped"}
    dropped = rows["outliers dropped"]
    assert dropped["n_points"] == x.size - len(flagged)
    alpha_clean = fit(POWER, x[None], clean).params["alpha"]
    assert dropped["params"]["alpha"] == pytest.approx(alpha_clean, rel=0.03)
    # Huber shrugs the broken run off (the baseline equals the clean fit); squared error does not.
    assert base.params["alpha"] == pytest.approx(alpha_clean, rel=1e-6)
    assert rows["squared error"]["max_relative_change"] > 5 * dropped["max_relative_change"]
    assert rows["largest scale dropped"]["n_points"] == x.size - 3
    assert rows["baseline"]["max_relative_change"] == 0.0


def test_largest_scale_means_largest_size_or_top_tenth() -> None:
    grid = np.repeat([1e6, 1e7, 1e8], 2)
    mask, note = largest_scale_mask(grid)
    assert mask.tolist() == [False] * 4 + [True] * 2 and "largest size" in note
    continuous = np.geomspace(1e6, 1e9, 50)  # every run its own size, as in Epoch's data
    mask, note = largest_scale_mask(continuous)
    assert mask.sum() == 5 and mask[-5:].all() and "90th-percentile" in note
