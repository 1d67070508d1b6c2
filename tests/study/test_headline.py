"""What ``scaling study`` prints from its report: the compute-optimal size of each budget of an isoFLOP grid."""

from __future__ import annotations

import json
from pathlib import Path

from scaling.analysis.tables.compute import compute_optimal
from scaling.study.run import compute_optimal_lines, mixed_lines
from tests.helpers import ISOFLOP_BUDGETS as BUDGETS, isoflop_runs


def test_each_budgets_optimum_and_the_law_or_why_a_budget_is_left_out(tmp_path: Path) -> None:
    co = compute_optimal(isoflop_runs(one_sided=BUDGETS[1]), "val/recon_loss", "params_total", "without",
                         bootstrap=20, seed=0)
    path = tmp_path / "compute.json"
    path.write_text(json.dumps([co.to_dict()]))
    lines = compute_optimal_lines(path)
    where = "compute-optimal size by val/recon_loss (without semantic reg.): "
    assert len(lines) == len(BUDGETS) + 1 and all(line.startswith(where) for line in lines)
    assert lines[0].startswith(f"{where}budget {BUDGETS[0]:.3g}: N_opt = ") and " [" in lines[0]
    assert lines[1] == where + co.budgets[1].left_out
    assert lines[-1].startswith(f"{where}The loss-optimal N grows as C^")
    assert compute_optimal_lines(tmp_path / "absent.json") == []


def test_a_metric_measured_differently_is_warned_about_once(tmp_path: Path) -> None:
    mixed = "eval/rfid was measured differently: fid_features is a (r1); b (r2)"
    fits = [{"form": "power", "warnings": [mixed, "only 3 sizes"]}, {"form": "power", "warnings": [mixed]}]
    (tmp_path / "fits.json").write_text(json.dumps(fits))
    assert mixed_lines(tmp_path / "fits.json") == [f"warning: {mixed}"]
