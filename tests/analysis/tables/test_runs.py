"""The runs table from a real MLflow store (sqlite in tmp), and `scaling analyze` reading it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from scaling.analysis.tables.demo import demo_runs
from scaling.analysis.tables.runs import KNOWN_METRICS, runs_table
from scaling.core.errors import UserError

PARAMS = ("params_total", "params_encoder", "params_decoder", "loss.semantic_weight")
FINAL = ("eval/rfid", "eval/lpips", "eval/psnr", "train/images_seen", "train/flops")
PROBE = ("probe/gfid", "probe/ar_val_loss", "probe/linear_acc")
PSNR_STEPS = (10.0, 14.0, 13.0)  # val/psnr by step: best (14) is not the last (13)


def log_run(client: MlflowClient, exp: str, row: pd.Series, parent: str, probe: bool) -> str:
    run = client.create_run(exp, run_name=row["run_name"],
                            tags={"sweep": "size-sweep", "mlflow.parentRunId": parent})
    rid = run.info.run_id
    params = [Param(k, str(row[k])) for k in PARAMS] + [Param("model.base_channels", "128")]
    metrics = [Metric(k, float(row[k]), 0, 100) for k in FINAL + (PROBE if probe else ())]
    metrics += [Metric("val/psnr", v, 0, step) for step, v in enumerate(PSNR_STEPS)]
    client.log_batch(rid, metrics=metrics, params=params, tags=[RunTag("kind", "child")])
    client.set_terminated(rid)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, sweep parent run id): 12 child runs, probe metrics only on 'with' runs."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("tok-scaling")
    parent = client.create_run(exp, run_name="sweep", tags={"sweep": "size-sweep"}).info.run_id
    for _, row in demo_runs(seeds=1).iterrows():
        log_run(client, exp, row, parent, probe=row["loss.semantic_weight"] > 0)
    other = client.create_experiment("elsewhere")
    client.set_terminated(client.create_run(other, run_name="unrelated").info.run_id)
    return uri, parent


def test_experiment_table_has_children_params_and_metrics(store) -> None:
    uri, parent = store
    df = runs_table("tok-scaling", uri)
    assert len(df) == 12 and parent not in set(df["run_id"])  # the sweep parent holds no results
    assert df["model.base_channels"].eq(128).all()  # params parsed as numbers
    assert df["params_total"].dtype.kind == "f" and df["params_total"].min() > 1e8
    assert set(KNOWN_METRICS) <= set(df.columns)
    assert (df["val/psnr"] == PSNR_STEPS[-1]).all()  # final = last step
    assert (df["val/psnr@best"] == max(PSNR_STEPS)).all()
    assert "train/flops@best" not in df.columns  # counters have no "best"
    assert df["sweep"].eq("size-sweep").all() and df["parent_run_id"].eq(parent).all()


def test_missing_metrics_are_nan(store) -> None:
    df = runs_table("tok-scaling", store[0])
    without = df[df["loss.semantic_weight"] == 0]
    assert without["probe/gfid"].isna().all() and df["probe/gfid"].notna().sum() == 6
    assert df["eval/ssim"].isna().all() and df["val/perplexity"].isna().all()
    assert not math.isnan(df["eval/rfid"].iloc[0])


def test_sweep_by_parent_id_or_tag(store) -> None:
    uri, parent = store
    by_parent = runs_table(parent, uri)
    by_tag = runs_table("size-sweep", uri)
    children = sorted(runs_table("tok-scaling", uri)["run_id"])
    assert sorted(by_parent["run_id"]) == children
    assert sorted(by_tag["run_id"]) == children  # the tag also marks the parent, which is left out
    with pytest.raises(UserError, match="no experiment, sweep parent run or sweep tag 'nope'"):
        runs_table("nope", uri)


def test_analyze_reads_mlflow(store, tmp_path: Path, cli) -> None:
    uri, parent = store
    code, out, err = cli(["analyze", parent, "--tracking-uri", uri, "--out", str(tmp_path),
                          "--bootstrap", "5", "--no-sensitivity", "--metrics", "eval/rfid,probe/gfid"])
    assert code == 0, err
    page = (tmp_path / "report.html").read_text()
    assert "12 runs" in page and "rFID falls as N^-" in page
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert np.isclose(runs["eval/rfid"].sum(), demo_runs(seeds=1)["eval/rfid"].sum())
    fits = pd.read_csv(tmp_path / "fits.csv")
    gfid_groups = set(fits.loc[fits["metric"] == "probe/gfid", "group"])
    assert gfid_groups == {"with"}  # no probe metrics without semantic reg.: nothing to fit there


def test_a_trunks_cooldown_branches_are_runs_of_the_sweep_and_the_trunk_stays(tmp_path: Path) -> None:
    """A sweep's trunk is the MLflow parent of its branches: by parent id the branches (grandchildren of the sweep
    run) are found, and by experiment or tag the trunk is kept (it is a run, not a sweep's parent)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("branches")
    parent = client.create_run(exp, run_name="sweep", tags={"sweep": "b"}).info.run_id
    rows = demo_runs(seeds=1).head(2)
    trunks = [log_run(client, exp, row, parent, probe=False) for _, row in rows.iterrows()]
    branch = log_run(client, exp, rows.iloc[0], trunks[0], probe=False)
    client.log_param(branch, "train.branch_from", "runs/trial-0000")
    expected = sorted(trunks + [branch])
    for source in (parent, "branches", "size-sweep"):
        assert sorted(runs_table(source, uri)["run_id"]) == expected, source
