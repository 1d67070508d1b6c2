"""`scaling analyze` on runs with several data budgets per size (a sweep's trunks and cooldown branches) and
repeated seeds: the (N, D) law and its loss surface, the law against size over each size's longest-trained runs
only, and each repeated grid point as the mean of its runs with an interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scaling.analysis.laws.forms import CHINCHILLA
from scaling.analysis.laws.words import num
from tests.helpers import CHINCHILLA_LAW

SIZES = np.geomspace(3e7, 1e9, 5)
TRUNK_STEPS, BRANCH_STEPS, BATCH = 40_000, (5_000, 10_000, 20_000), 256
SEEDS = (0, 1, 2)  # the trunks of the smallest size, run three times


def trunk_and_branches() -> pd.DataFrame:
    """Each size's trunk and its three branches (the loss from Hoffmann et al.'s law, 0.3% noise); the smallest
    size's trunk with three seeds. Columns as a sweep's runs have them."""
    rng = np.random.default_rng(1)
    rows = []
    for n in SIZES:
        for steps in (TRUNK_STEPS, *BRANCH_STEPS):
            for seed in SEEDS if (n == SIZES[0] and steps == TRUNK_STEPS) else (0,):
                d = steps * BATCH
                loss = CHINCHILLA.predict(CHINCHILLA_LAW, np.array([[n], [d]]))[0] * np.exp(rng.normal(0, 0.003))
                rows.append({"run_name": f"N{n:.3g}-{steps}-s{seed}", "params_total": n, "train.steps": steps,
                             "train.seed": seed, "train.branch_step": 0 if steps == TRUNK_STEPS else steps - 1000,
                             "train/images_seen": d, "train/flops": 6 * n * d, "val/recon_loss": loss,
                             "loss.semantic_weight": 0.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory, cli) -> Path:
    root = tmp_path_factory.mktemp("surface")
    trunk_and_branches().to_csv(root / "runs.csv", index=False)
    code, _, err = cli(["analyze", str(root / "runs.csv"), "--out", str(root / "out"), "--bootstrap", "40",
                        "--no-sensitivity", "--metrics", "val/recon_loss"])
    assert code == 0, err
    return root / "out"


def test_the_n_d_law_is_fitted_and_drawn_as_a_surface(report: Path) -> None:
    fits = json.loads((report / "fits.json").read_text())
    law = next(f for f in fits if f["form"] == "chinchilla")
    assert law["x2"] == "train/images_seen" and law["n_points"] == len(SIZES) * 4 + 2
    for name in ("alpha", "beta"):
        lo, hi = law["ci"][name]
        assert lo < CHINCHILLA_LAW[name] < hi and hi - lo < 0.2, (name, law["ci"][name])
    page = (report / "report.html").read_text()
    surface = report / "plots" / "surface_val_recon_loss_without.png"
    assert surface.stat().st_size > 5000 and "plots/surface_val_recon_loss_without.png" in page
    assert "Over size and data" in page


def test_the_law_against_size_takes_each_sizes_longest_trained_runs(report: Path) -> None:
    fits = json.loads((report / "fits.json").read_text())
    power = next(f for f in fits if f["form"] == "power" and f["x"] == "params_total")
    assert power["n_points"] == len(SIZES) + len(SEEDS) - 1  # the trunks; the smallest size's three seeds
    page = (report / "report.html").read_text()
    assert f"{len(SIZES) * len(BRANCH_STEPS)} run(s) that saw fewer" in page


def test_a_repeated_grid_point_is_its_mean_with_a_student_t_interval(report: Path) -> None:
    runs = trunk_and_branches()
    seeds = runs[(runs["params_total"] == SIZES[0]) & (runs["train.steps"] == TRUNK_STEPS)]["val/recon_loss"]
    assert len(seeds) == len(SEEDS)
    half = stats.t.ppf(0.975, len(seeds) - 1) * seeds.std(ddof=1) / np.sqrt(len(seeds))
    page = (report / "report.html").read_text()
    assert "Repeated runs" in page
    expected = f"{num(seeds.mean())} [{num(seeds.mean() - half)}, {num(seeds.mean() + half)}]"
    assert expected in page, expected
    assert page.count("mean (95% interval)") == 1 and page.count(">3</td>") >= 1  # only that point is repeated
