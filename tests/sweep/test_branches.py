"""Cooldown branches in a sweep: every grid point's run is a trunk, and at each branch step a branch trial starts
from the trunk's checkpoint and decays on its own. The dry run plans each branch at the cost of its decay; a
branch the trunks cannot give is refused in one line before anything is created; a real sweep runs trunk and
branch, the branch a child of the trunk's MLflow run, launched once the trunk's checkpoint is there."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from scaling.core import events
from scaling.plan.cost import run_flops
from scaling.plan.count import step_flops, step_flops_done
from scaling.sweep.driver import run_sweep
from scaling.sweep.spec import load_sweep
from tests.helpers import run_main, write_sweep

GRID = '''
[grid]
mode = "product"
[grid.axes]
"model.base_channels" = [8, 16]
'''
# The trunk: 2 warm-up steps, stable, decay over its last 10 of 30; checkpoints every 10 steps.
WSD = {"optim.schedule": '"wsd"', "optim.warmup_steps": 2, "optim.decay_steps": 10, "train.ckpt_every": 10}


def branched_sweep(tmp: Path, data: Path, branches: str, grid: str = GRID, max_concurrent: int = 2,
                   **overrides: object) -> Path:
    path = write_sweep(tmp, data, grid + branches, max_concurrent=max_concurrent)
    extra = "".join(f'"{k}" = {v}\n' for k, v in (WSD | overrides).items())
    path.write_text(path.read_text().replace("[overrides]\n", "[overrides]\n" + extra))
    return path


def test_the_dry_run_plans_each_branch_at_the_cost_of_its_decay(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    path = branched_sweep(tmp_path, tmp_path / "data", "\n[branches]\nat = [20, 10]\ndecay_steps = 5\n")
    proc = run_main(capsys, "sweep", "run", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    spec = load_sweep(path)
    lines = [line.strip() for line in proc.stdout.splitlines()[1:]]
    trunks = [spec.trial_config(p, spec.run_dir(0)) for p in spec.grid_points()]
    assert [t.train.milestone_every for t in trunks] == [10, 10]  # the branch steps' checkpoints are kept
    expected = [run_flops(t) for t in trunks]
    for at in (10, 20):  # earliest branch first; each costs its 5 decay steps, not its trunk's steps before them
        for t in trunks:
            parts = step_flops(t)
            expected.append(step_flops_done(parts, at + 5, 16, 0) - step_flops_done(parts, at, 16, 0))
    labels = ["base_channels=8", "base_channels=16"] + [f"base_channels={c} branch@{at}" for at in (10, 20)
                                                       for c in (8, 16)]
    for line, label, flops in zip(lines, labels, expected):
        assert line.startswith(f"{label}: "), (line, label)
        assert f" {flops:.3g} FLOPs" in line, (line, flops)
    assert all(" 5 steps," in line for line in lines[2:6])
    assert lines[6].startswith(f"total: {sum(expected):.3g} FLOPs")
    assert expected[2] == expected[4] > 0  # a decay costs the same wherever it starts (no GAN)
    assert not (tmp_path / "root").exists()


BAD = {
    "not wsd": ("\n[branches]\nat = [10]\ndecay_steps = 5\n", {"optim.schedule": '"cosine"'},
                'branches (model.base_channels = 8): the trunk needs optim.schedule = "wsd"'),
    "not a checkpoint": ("\n[branches]\nat = [15]\ndecay_steps = 5\n", {},
                         "branches (model.base_channels = 8): step 15 is not a kept checkpoint of the trunk"),
    "in the decay": ("\n[branches]\nat = [20, 30]\ndecay_steps = 5\n", {"optim.decay_steps": 15},
                     "branches (model.base_channels = 8): at step 20 the trunk is no longer in its stable phase"),
    "past the end": ("\n[branches]\nat = [40]\ndecay_steps = 5\n", {},
                     "branches (model.base_channels = 8): step 40 is not below the trunk's 30 steps"),
    "twice": ("\n[branches]\nat = [10, 10]\ndecay_steps = 5\n", {}, "branches.at: step 10 is listed twice"),
    "no decay": ("\n[branches]\nat = [10]\n", {}, "branches.decay_steps: must be positive, got 0"),
    "no steps": ("\n[branches]\ndecay_steps = 5\n", {}, "branches.at: must be a non-empty list"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_branch_the_trunks_cannot_give_is_one_line_before_anything_is_created(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    branches, overrides, message = BAD[name]
    path = branched_sweep(tmp_path, tmp_path / "data", branches, **overrides)
    proc = run_main(capsys, "sweep", "run", str(path))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith(f"scaling: error: sweep {path}: {message}") and "\n" not in err, err
    assert not (tmp_path / "root").exists()


def test_a_search_cannot_branch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    search = '\n[search]\nn_trials = 2\n[search.space."optim.lr"]\ntype = "float"\nlow = 1e-4\nhigh = 1e-3\n'
    path = branched_sweep(tmp_path, tmp_path / "data", "\n[branches]\nat = [10]\ndecay_steps = 5\n", grid=search)
    proc = run_main(capsys, "sweep", "run", str(path))
    assert proc.returncode == 2 and "branches: need a grid (grid.axes)" in proc.stderr


@pytest.mark.slow  # trains a trunk and its branch
def test_a_sweep_runs_each_trunk_and_its_branches(synth_data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """One grid point, its trunk (30 steps) and a branch at step 10 (decaying over 5): the branch is asked only
    once the trunk's checkpoint at 10 is there (before that its pre-flight would fail it), starts there, is a
    child of the trunk's MLflow run, and the sweep counts its own FLOPs only."""
    grid = '\n[grid]\nmode = "product"\n[grid.axes]\n"model.base_channels" = [8]\n'
    path = branched_sweep(tmp_path, synth_data, "\n[branches]\nat = [10]\ndecay_steps = 5\n", grid=grid)
    study = run_sweep(load_sweep(path), poll_s=0.5)
    trunk, branch = sorted(study.trials, key=lambda t: t.number)
    assert [trunk.state, branch.state] == [TrialState.COMPLETE] * 2, branch.user_attrs.get("error")
    assert "branch_step" not in trunk.user_attrs and branch.user_attrs["branch_step"] == 10
    trunk_dir, branch_dir = Path(trunk.user_attrs["run_dir"]), Path(branch.user_attrs["run_dir"])
    start = events.read(branch_dir)[0]
    assert (start["event"], start["step"], start["branch_from"]) == ("start", 10, str(trunk_dir))
    assert events.last(branch_dir) == "finished"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {t.number: client.get_run(t.user_attrs["mlflow_run_id"]) for t in (trunk, branch)}
    assert runs[1].data.tags["mlflow.parentRunId"] == runs[0].info.run_id
    assert runs[1].data.metrics["train/images_seen"] == 15 * 16 < runs[0].data.metrics["train/images_seen"]
    status = run_main(capsys, "sweep", "status", str(path)).stdout.strip().splitlines()
    spec = load_sweep(path)
    cfg = spec.trial_config({"model.base_channels": 8}, spec.run_dir(0))
    parts = step_flops(cfg)
    own = step_flops_done(parts, 15, 16, 0) - step_flops_done(parts, 10, 16, 0)
    assert "branch@10" in status[2] and f" {own:.3g} " in status[2], status
    assert status[-1] == f"training FLOPs, all trials: {run_flops(cfg) + own:.3g}"
