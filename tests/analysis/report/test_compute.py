"""`scaling analyze` over compute: an isoFLOP grid's compute-optimal sizes with intervals, a badly sampled
budget left out by name (or refused), and each metric against training FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import ISOFLOP_BUDGETS as BUDGETS, ISOFLOP_EXPONENT as EXPONENT, isoflop_n_opt as n_opt
from tests.helpers import isoflop_runs


pytestmark = pytest.mark.xdist_group("compute_report_fixture")  # one worker builds the module's report once


@pytest.fixture(scope="module")
def report(tmp_path_factory, cli) -> Path:
    root = tmp_path_factory.mktemp("compute")
    isoflop_runs(one_sided=BUDGETS[1]).to_csv(root / "runs.csv", index=False)
    code, out, err = cli(["analyze", str(root / "runs.csv"), "--out", str(root / "out"), "--bootstrap", "60",
                          "--no-sensitivity", "--metrics", "val/recon_loss"])
    assert code == 0, err
    return root / "out"


def test_each_budget_gets_its_optimal_size_with_an_interval_and_the_law_its_exponent(report: Path) -> None:
    (co,) = json.loads((report / "compute.json").read_text())
    assert co["metric"] == "val/recon_loss" and co["target_budget"] == pytest.approx(10 * BUDGETS[-1])
    kept = [b for b in co["budgets"] if b["n_opt"] is not None]
    assert [b["budget"] for b in kept] == [BUDGETS[0], BUDGETS[2], BUDGETS[3]]
    for b in kept:  # a parabola's vertex is off the true optimum by a constant factor: the interval is around it
        lo, hi = b["ci"]
        assert lo < b["n_opt"] < hi and 0.3 < b["n_opt"] / n_opt(b["budget"]) < 3, b
    law = co["law"]
    lo, hi = law["ci"]["a"]
    assert lo < EXPONENT < hi and hi - lo < 0.2, law["ci"]
    assert law["derived"]["prediction"] > kept[-1]["n_opt"]  # extrapolated to 10x the largest budget


def test_a_budget_sampled_on_one_side_is_left_out_by_name(report: Path) -> None:
    (co,) = json.loads((report / "compute.json").read_text())
    left_out = next(b for b in co["budgets"] if b["budget"] == BUDGETS[1])
    assert left_out["n_opt"] is None and "outside the sampled sizes" in left_out["left_out"]
    assert left_out["left_out"] in co["law"]["warnings"]
    page = (report / "report.html").read_text()
    assert "Scaling with compute" in page and "Compute-optimal size by val recon loss" in page
    assert f"budget {BUDGETS[1]:.3g}: the loss minimum" in page
    for stem in ("isoflop_val_recon_loss_without", "compute_val_recon_loss"):
        assert (report / "plots" / f"{stem}.png").stat().st_size > 5000 and f"plots/{stem}.png" in page


def test_no_size_law_is_fitted_to_an_isoflop_grid_and_the_report_says_why(report: Path) -> None:
    """At its largest budget each size's run is a point of an isoFLOP profile: a power law in N would misread it."""
    fits = json.loads((report / "fits.json").read_text())
    assert not [f for f in fits if f["form"] == "power" and f["x"] == "params_total"], fits
    assert "not fitted: an isoFLOP grid: at a fixed budget" in (report / "report.html").read_text()


def test_strict_budgets_refuse_the_analysis(tmp_path: Path, user_error) -> None:
    isoflop_runs(one_sided=BUDGETS[1]).to_csv(tmp_path / "runs.csv", index=False)
    msg = user_error(["analyze", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "out"), "--bootstrap", "5",
                      "--no-sensitivity", "--strict-budgets"])
    assert f"budget {BUDGETS[1]:.3g}" in msg and "outside the sampled sizes" in msg


def test_an_output_that_is_a_file_is_refused_and_kept(tmp_path: Path, user_error) -> None:
    isoflop_runs().to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "out").write_text("mine")
    msg = user_error(["analyze", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "out")])
    assert msg == f"scaling: error: --out: {tmp_path / 'out'} exists and is not a directory"
    below = user_error(["analyze", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "out" / "report")])
    assert below == f"scaling: error: --out: {tmp_path / 'out'} (above {tmp_path / 'out' / 'report'}) is a file, not a directory"
    assert (tmp_path / "out").read_text() == "mine"


def test_a_metric_against_compute_is_fitted_over_the_compute_efficient_runs(tmp_path: Path, cli) -> None:
    """A size sweep at fixed steps: compute grows with size; a larger run that does worse is off the frontier."""
    n = np.geomspace(1e6, 1e8, 7)
    flops = 6 * n * 1e9
    loss = 2.0 + 50 * flops ** -0.2
    loss[3] *= 1.5  # worse than the cheaper runs: not compute-efficient
    runs = pd.DataFrame({"params_total": n, "train/flops": flops, "val/recon_loss": loss,
                         "loss.semantic_weight": 0.0})
    runs.to_csv(tmp_path / "runs.csv", index=False)
    code, _, err = cli(["analyze", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "out"), "--bootstrap", "20",
                        "--no-sensitivity", "--metrics", "val/recon_loss"])
    assert code == 0, err
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    (compute,) = [f for f in fits if f["x"] == "train/flops"]
    assert compute["n_points"] == 6  # the worse run left out
    assert compute["params"]["alpha"] == pytest.approx(0.2, abs=0.02)
    assert "C^" in compute["law"] or "as C" in compute["law"]
    assert json.loads((tmp_path / "out" / "compute.json").read_text()) == []  # no isoFLOP grid


def test_an_isoflop_budget_is_one_compute_level_on_the_frontier() -> None:
    """A budget's trials spend it within part of a step: their FLOPs differ slightly, and only the best of them is
    a compute-efficient run."""
    from scaling.analysis.tables.compute import frontier

    runs = pd.DataFrame({"train/flops": [1.99e12, 2.0e12, 2.01e12, 3.98e12, 4.0e12, 8e12],
                         "val/recon_loss": [0.07, 0.05, 0.09, 0.06, 0.04, 0.045], "run_name": list("abcdef")})
    assert list(frontier(runs, "val/recon_loss")["run_name"]) == ["b", "e"]  # f is worse than e
    runs["val/psnr"] = [20.0, 21.0, 19.0, 22.0, 23.0, 22.5]  # higher is better
    assert list(frontier(runs, "val/psnr")["run_name"]) == ["b", "e"]
