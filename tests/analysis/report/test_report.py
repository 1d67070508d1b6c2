"""`scaling analyze` on a CSV of synthetic runs writes plots, an HTML report and a parameter CSV."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from scaling.analysis.tables.demo import demo_runs


pytestmark = pytest.mark.xdist_group("report_fixture")  # one worker builds the module's report once


@pytest.fixture(scope="module")
def report(tmp_path_factory, cli) -> Path:
    """One analyze run for every test here: 12 runs (6 sizes, with and without semantic reg.)."""
    root = tmp_path_factory.mktemp("report")
    demo_runs(seeds=1).to_csv(root / "runs.csv", index=False)
    code, out, err = cli(["analyze", str(root / "runs.csv"), "--out", str(root / "out"),
                          "--target-scale", "1e10", "--bootstrap", "10",
                          "--metrics", "eval/rfid,probe/gfid,probe/linear_acc"])
    assert code == 0, err
    assert out.strip() == str(root / "out" / "report.html")
    return root / "out"


def test_every_plot_exists_is_non_empty_and_is_referenced(report: Path) -> None:
    page = (report / "report.html").read_text()
    plots = sorted((report / "plots").iterdir())
    stems = {p.stem for p in plots}
    assert {"scaling_eval_rfid", "scaling_probe_gfid", "tradeoff", "metrics_by_size"} <= stems
    for plot in plots:
        assert plot.suffix in {".png", ".svg"} and plot.stat().st_size > 5000, plot
        assert f'"plots/{plot.name}"' in page, plot.name  # relative to the report
    assert (report / "plots" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    referenced = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert all((report / ref).is_file() for ref in referenced)


def test_report_states_laws_and_flags_the_dilemma(report: Path) -> None:
    page = (report / "report.html").read_text()
    assert re.search(r"rFID falls as N\^-0\.\d+ ± \d\.\d+", page)
    assert "AR-probe gFID rises as N^" in page  # the synthetic runs without semantic regularisation
    assert "<b>Dilemma.</b> without semantic reg." in page
    assert "<b>Dilemma.</b> with semantic reg." not in page
    assert "Weak fit:" in page  # 6 runs per law, 3 parameters: the report must say so
    assert "squared error" in page and "largest scale dropped" in page  # sensitivity table


def test_fitted_parameters_csv_keeps_full_precision(report: Path) -> None:
    rows = list(csv.DictReader((report / "fits.csv").open()))
    fits = json.loads((report / "fits.json").read_text())
    rfid = next(f for f in fits if f["y"] == "eval/rfid" and f["semantic_group"] == "with")
    alpha = next(r for r in rows if r["metric"] == "eval/rfid" and r["group"] == "with"
                 and r["name"] == "alpha")
    assert float(alpha["value"]) == rfid["params"]["alpha"]  # exact: both are repr of one float
    assert repr(float(alpha["value"])) == alpha["value"]
    lo, hi = float(alpha["ci_low"]), float(alpha["ci_high"])
    assert lo < float(alpha["value"]) < hi
    assert {r["metric"] for r in rows} == {"eval/rfid", "probe/gfid", "probe/linear_err"}


def test_each_probes_linear_accuracy_is_fitted_as_its_own_error() -> None:
    import pandas as pd

    from scaling.analysis.report.analyze import _fit_column, with_linear_error

    out = with_linear_error(pd.DataFrame({"probe/linear_acc": [30.0, None], "flow/linear_acc": [0.5, 0.75]}))
    assert out["probe/linear_err"].tolist()[0] == 70.0 and out["flow/linear_err"].tolist() == [0.5, 0.25]
    assert with_linear_error(pd.DataFrame({"x": [1.0]}))["flow/linear_err"].isna().all()
    assert (_fit_column("flow/linear_acc"), _fit_column("probe/linear_acc")) == ("flow/linear_err", "probe/linear_err")


def test_any_size_column_is_an_axis_such_as_the_bottleneck(tmp_path: Path, cli) -> None:
    """ViTok's axis: the laws against a run's bottleneck size instead of its parameter count."""
    runs = demo_runs(seeds=1)
    runs["bottleneck_floats"] = (runs["params_total"] / 1000).round()
    runs.to_csv(tmp_path / "runs.csv", index=False)
    code, _, err = cli(["analyze", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "out"), "--bootstrap", "10",
                        "--size", "bottleneck_floats", "--metrics", "eval/rfid"])
    assert code == 0, err
    fits = json.loads((tmp_path / "out" / "fits.json").read_text())
    axes = {f["x"] for f in fits if f["form"] == "power" and f["y"] == "eval/rfid"}
    assert "bottleneck_floats" in axes and "params_total" not in axes  # (and train/flops: the law against compute)
