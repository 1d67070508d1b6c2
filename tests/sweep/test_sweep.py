"""Sweeps end to end: a grid through the local executor (and the dev Slurm cluster, as job arrays), a driver
SIGKILLed and re-run, a pruned Optuna trial, and bad sweep files refused before anything is launched."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from scaling.cli import main
from scaling.launch.status import read_jobs
from scaling.plan.cost import run_flops
from scaling.sweep.spec import load_sweep
from scaling.core import events
from scaling.launch.job import measured
from tests.helpers import REPO, run_cli, run_main, write_sweep

ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


GRID = '''
[grid]
mode = "product"
[grid.axes]
"model.base_channels" = [8, 16]
"optim.lr" = [1e-3, 3e-3]
'''


def trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    spec = load_sweep(path)
    return optuna.load_study(study_name=spec.name, storage=spec.storage_url()).trials


def child_runs(tmp: Path) -> tuple[list, list]:
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def assert_ran_once_each(path: Path, n: int) -> None:
    """n COMPLETE trials with distinct params, each one job and one start at step 0, one finished run each,
    all children of one MLflow parent."""
    done = trials(path)
    assert [t.state for t in done] == [TrialState.COMPLETE] * n, [(t.number, t.state) for t in done]
    assert len({tuple(sorted(t.params.items())) for t in done}) == n
    for t in done:
        run_dir = Path(t.user_attrs["run_dir"])
        assert [j["job_id"] for j in read_jobs(run_dir)] == [t.user_attrs["job_id"]]
        starts = [e for e in events.read(run_dir) if e["event"] == "start"]
        assert [e["step"] for e in starts] == [0], run_dir
        assert t.value is not None and t.user_attrs["mlflow_run_id"]
    parents, children = child_runs(path.parent)
    assert len(parents) == 1 and len(children) == n
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"] for t in done}
    assert all(r.info.status == "FINISHED" for r in children + parents)


def concurrency(profile: str) -> int:
    """On the dev cluster the 4 trials go at once, as one job array (Slurm runs 2 of its tasks at a time on 2
    CPUs, the others wait in the queue); the local executor runs 2 at a time."""
    return 4 if profile == "dev" else 2


def assert_one_array(path: Path) -> None:
    """The dev-cluster sweeps queue their 4 trials as the 4 tasks of one array, task i the i-th trial."""
    done = trials(path)
    job_ids = [t.user_attrs["job_id"] for t in done]
    assert len({j.split("_")[0] for j in job_ids}) == 1 and [j.split("_")[1] for j in job_ids] == ["0", "1", "2", "3"]
    for t in done:  # the task's log is linked where a single job's would be
        job_id = t.user_attrs["job_id"]
        log = Path(t.user_attrs["run_dir"]) / "submitit" / f"{job_id}_0_log.out"
        assert f"JobEnvironment(job_id={job_id}," in log.read_text(), log
        assert not list(log.parent.glob("array-*.json"))  # the pointers are spent once the jobs are recorded


def assert_finished_sweep(path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every trial COMPLETE at its last step in ``sweep status``, with the FLOPs its run logged (the planner's
    whole-run count) and their total, which the MLflow parent holds too; re-running the finished sweep does no
    work."""
    status = run_main(capsys, "sweep", "status", str(path))
    lines = status.stdout.strip().splitlines()
    assert lines[0].split() == ["TRIAL", "PARAMS", "STATE", "STEP", "VAL/PSNR", "FLOPS", "JOB"]
    assert len(lines) == 6 and all(" COMPLETE " in line and " 30 " in line for line in lines[1:5])
    spec = load_sweep(path)
    planned = [run_flops(spec.trial_config(t.params, spec.run_dir(t.number))) for t in trials(path)]
    for line, flops in zip(lines[1:5], planned):
        assert f" {flops:.3g} " in line, (line, flops)
    assert lines[5] == f"training FLOPs, all trials: {sum(planned):.3g}"
    (parent,), _ = child_runs(path.parent)
    assert parent.data.metrics["sweep/train_flops"] == pytest.approx(sum(planned), rel=1e-9)
    again = run_main(capsys, "sweep", "run", str(path), "--poll", "1")
    assert again.returncode == 0 and "launched" not in again.stdout
    assert_ran_once_each(path, 4)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["dev"], indirect=True)  # local: the killed-driver test's grid, below
def test_grid_sweep_runs_every_point_once(profile: str, synth_data: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    path = write_sweep(tmp_path, synth_data, GRID, profile, max_concurrent=concurrency(profile))
    t0 = time.monotonic()
    proc = run_cli("sweep", "run", str(path), "--poll", "1", env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"4-trial grid ({profile}): {time.monotonic() - t0:.1f} s")
    assert_ran_once_each(path, 4)
    assert_one_array(path)
    assert_finished_sweep(path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["local"], indirect=True)  # arrays a dead driver queued: the next test
def test_killed_driver_resumes_without_rerunning_or_losing_trials(profile: str, synth_data: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """The local executor's grid, its driver killed twice at random moments: the third runs every point once.
    (A grid whose driver is never killed is the dev cluster's test above: the same end state is asserted.)"""
    path = write_sweep(tmp_path, synth_data, GRID, profile, max_concurrent=concurrency(profile))
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    cmd = [sys.executable, "-m", "scaling", "sweep", "run", str(path), "--poll", "1"]
    env = {**os.environ, **ENV}
    for kill in range(2):
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2, 20))  # from study creation to trials in flight
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"seed {seed}: {proc.stderr[-3000:]}"
    print(f"killed at random moments (seed {seed}); the last driver:\n{proc.stdout}")
    assert_ran_once_each(path, 4)
    assert_finished_sweep(path, capsys)


@pytest.mark.slow
def test_array_jobs_queued_by_a_driver_killed_before_recording_them_are_adopted(
        dev_cluster: None, synth_data: Path, tmp_path: Path, random_inception: Path) -> None:
    """The driver dies right after queueing a 2-trial training array and its probe array (each probe task
    waiting on its training task) and before recording either: the next driver finds all four jobs through the
    run directories' array pointers, records them with their kinds, and queues nothing again."""
    grid = '[grid.axes]\n"model.base_channels" = [8, 16]\n'
    path = write_sweep(tmp_path, synth_data, grid, "dev")
    probe = {"probe.size": '"tiny"', "probe.steps": 20, "probe.batch_size": 16, "probe.log_every": 10,
             "probe.ckpt_every": 20, "probe.gfid_samples": 10, "probe.cfg_scales": "[1.0]",
             "probe.linear_probe_epochs": 1, "eval.num_images": 16,
             "eval.inception_weights": f'"{random_inception}"', "eval.stats_cache": f'"{tmp_path / "fid"}"'}
    text = path.read_text().replace("max_concurrent = 2\n", "max_concurrent = 2\nprobe = true\n")
    path.write_text(text.replace("[overrides]\n", "[overrides]\n" + "".join(f'"{k}" = {v}\n' for k, v in probe.items())))
    killed = run_cli("sweep", "run", str(path), "--poll", "1", env={**ENV, "SCALING_FAULT": "array-queued:0"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dirs = sorted((tmp_path / "root").glob("trial-*"))
    assert len(run_dirs) == 2 and all(read_jobs(d) == [] for d in run_dirs)  # queued, never recorded
    assert all(len(list((d / "submitit").glob("array-*.json"))) == 1 for d in run_dirs)  # but pointed to
    proc = run_cli("sweep", "run", str(path), "--poll", "1", env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launched" not in proc.stdout, proc.stdout
    done = trials(path)
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2
    arrays = set()
    for i, t in enumerate(done):
        run_dir = Path(t.user_attrs["run_dir"])
        jobs = read_jobs(run_dir)
        assert [j["kind"] for j in jobs] == ["train", "probe"], jobs
        assert [j["job_id"].split("_")[1] for j in jobs] == [str(i), str(i)]
        assert not list((run_dir / "submitit").glob("array-*.json"))
        arrays.add(tuple(j["job_id"].split("_")[0] for j in jobs))
        assert [e["step"] for e in events.read(run_dir) if e["event"] == "start"] == [0]
        assert measured(run_dir)
        trained = next(e for e in events.read(run_dir) if e["event"] == "finished")
        probe_start = next(e for e in events.read(run_dir / "probe") if e["event"] == "start")
        assert probe_start["time"] > trained["time"]  # aftercorr: task i's probe waited on task i's training
    assert len(arrays) == 1 and len(set(next(iter(arrays)))) == 2  # one training array, one probe array


@pytest.mark.slow
def test_search_prunes_a_bad_trial_through_the_pruner(synth_data: Path, tmp_path: Path) -> None:
    body = '''
[search]
n_trials = 2
enqueue = [{"optim.lr" = 1e-3}, {"optim.lr" = 1e-8}]
[search.space."optim.lr"]
type = "float"
low = 1e-9
high = 1e-1
log = true

[pruner]
kind = "median"
metric = "val/psnr"
n_startup_trials = 1
'''
    path = write_sweep(tmp_path, synth_data, body, max_concurrent=1)  # the good one first, then the bad
    path.write_text(path.read_text().replace("[overrides]\n", '[overrides]\n"optim.min_lr" = 0.0\n'))
    proc = run_cli("sweep", "run", str(path), "--poll", "1", env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = trials(path)
    assert [t.state for t in done] == [TrialState.COMPLETE, TrialState.PRUNED]
    bad = done[1]
    assert bad.params["optim.lr"] == 1e-8 and bad.last_step < 30  # it learns nothing (1e3 would diverge: FAIL)
    history = events.read(Path(bad.user_attrs["run_dir"]))
    assert history[-1]["event"] == "pruned" and history[-1]["step"] == bad.last_step


BAD = {
    'basee = "tiny"\n': "basee: unknown key (did you mean 'base'?)",
    '[grid.axes]\n"model.base_channels" = []\n': "grid.axes.model.base_channels: must be a non-empty list of values",
    '[grid.axes]\n"model.base_chanels" = [8]\n':
        "grid.axes.model.base_chanels: not a config key (did you mean 'model.base_channels'?)",
    '[grid]\nmode = "zip"\n[grid.axes]\n"model.base_channels" = [8, 16]\n"optim.lr" = [1e-3]\n':
        "grid.axes: zip axes differ in length (model.base_channels: 2, optim.lr: 1)",
    '[search]\nn_trials = 2\n[search.space."optim.lr"]\ntype = "float"\nlow = 1e-2\nhigh = 1e-3\n':
        "search.space.optim.lr: low (0.01) must be below high (0.001)",
    '[search]\nn_trials = 2\n[search.space."optim.lr"]\ntype = "float"\nlow = 0.0\nhigh = 1e-3\nlog = true\n':
        "search.space.optim.lr: log needs low > 0, got 0",
    '[search]\nn_trials = 2\n[search.space."optim.lr"]\ntype = "normal"\nlow = 0.0\nhigh = 1.0\n':
        "search.space.optim.lr.type: must be one of float, int, categorical, got 'normal'",
    '[search]\nn_trials = 2\n[search.space."optim.lr"]\ntype = "float"\nlo = 0.0\n':
        "search.space.optim.lr.lo: unknown key (did you mean search.space.optim.lr.'low'?)",
    '[grid.axes]\n"model.base_channels" = [8, "wide"]\n': "model.base_channels: expected int, got str 'wide'",
    '[grid.axes]\n"model.base_channels" = [8, 16, 8]\n':
        "grid.axes.model.base_channels: 8 is listed twice (every grid point would run twice)",
    '[grid]\nmode = "zip"\n[grid.axes]\n"model.base_channels" = [8, 16, 8]\n"optim.lr" = [1e-3, 1e-3, 1e-3]\n':
        "grid.axes: zip point 3 repeats point 1 (model.base_channels = 8, optim.lr = 0.001): it would run twice",
}


@pytest.mark.parametrize("body", list(BAD))
def test_bad_sweep_file_fails_with_one_line_before_launching(body: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.toml"
    head = 'base = "tiny"\n' if not body.startswith("basee") else ""
    path.write_text(head + f'root = "{tmp_path / "root"}"\n' + body)
    assert main(["sweep", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"scaling: error: sweep {path}: {BAD[body]}", err
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_sweeps_load(path: Path) -> None:
    spec = load_sweep(path)
    assert spec.is_grid or spec.search.n_trials > 0


@pytest.mark.slow
def test_cancel_stops_the_jobs_and_marks_the_trials(profile: str, synth_data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """On the dev cluster the two trials are the tasks of one array: each gets TERM (an array task that ends as
    the signal reaches it makes scancel fail with 'already completing', which is success)."""
    path = write_sweep(tmp_path, synth_data, GRID, profile, steps=5000)
    env = {**os.environ, **ENV}
    driver = subprocess.Popen([sys.executable, "-m", "scaling", "sweep", "run", str(path), "--poll", "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while sum(events.last(p) == "first_step" for p in (tmp_path / "root").glob("trial-*")) < 2:  # both training
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.5)
    proc = run_main(capsys, "sweep", "cancel", str(path))
    assert proc.returncode == 0 and proc.stdout.count("sent TERM") == 2, proc.stdout + proc.stderr[-2000:]
    assert driver.wait(timeout=60) == 0  # the driver stops at its next poll
    done = trials(path)
    assert [t.state for t in done[:2]] == [TrialState.FAIL] * 2 and all(t.user_attrs["cancelled"] for t in done[:2])
    assert [t.state for t in done[2:]] == [TrialState.WAITING] * 2  # a later `sweep run` continues with these
    for t in done[:2]:
        run_dir = Path(t.user_attrs["run_dir"])
        deadline = time.monotonic() + 60
        while events.read(run_dir)[-1]["event"] != "cancelled":  # checkpointed and stopped
            assert time.monotonic() < deadline
            time.sleep(0.5)
    status = run_main(capsys, "sweep", "status", str(path)).stdout
    assert status.count("CANCELLED") == 2 and status.count("WAITING") == 2


def test_a_sweep_root_that_is_a_file_is_one_line_and_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "results.csv"
    root.write_text("mine")
    path = tmp_path / "sweep.toml"
    path.write_text(f'base = "tiny"\nroot = "{root}"\n' + GRID)
    for command in ("run", "status"):
        capsys.readouterr()
        assert main(["sweep", command, str(path)]) == 2
        assert capsys.readouterr().err.strip() == \
            f"scaling: error: sweep {path}: root: {root} exists and is not a directory"
    assert root.read_text() == "mine"


def test_a_sweep_never_run_is_one_line_for_status_and_cancel(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "never.toml"
    path.write_text(f'base = "tiny"\nroot = "{tmp_path / "root"}"\n' + GRID)
    for command in ("status", "cancel"):
        capsys.readouterr()
        assert main(["sweep", command, str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"scaling: error: sweep never: no study in sqlite:///{(tmp_path / 'root' / 'optuna.db').resolve()}"
                       " (not run yet: 'scaling sweep run')"), err
    assert not (tmp_path / "root" / "optuna.db").exists()  # asking created no empty store
    with pytest.raises(SystemExit) as stop:  # argparse's usage error (exit 2), before anything runs
        main(["sweep", "run", str(path), "--poll", "0"])
    assert stop.value.code == 2 and "argument --poll: must be a positive number, got 0" in capsys.readouterr().err
