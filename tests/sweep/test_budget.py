"""A sweep's planned cost and budget: the dry run prints it and queues nothing, a sweep over its budget is refused
in one line before anything is created, and the driver queues no trial that would cross the budget."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from scaling.plan.cost import gpu_hours, run_flops
from scaling.plan.count import step_flops, step_flops_done
from scaling.sweep.budget import forecast, total_flops
from scaling.launch.status import read_jobs
from scaling.sweep.driver import run_sweep
from scaling.sweep.search import distributions, enqueue_points, open_study
from scaling.sweep.spec import load_sweep
from tests.helpers import run_main, write_sweep

GRID = '''
[grid]
mode = "product"
[grid.axes]
"model.base_channels" = [8, 16]
'''


def grid_cost(path: Path) -> list[int]:
    spec = load_sweep(path)
    return [run_flops(spec.trial_config(point, spec.run_dir(0))) for point in spec.grid_points()]


def test_dry_run_prints_the_plan_and_queues_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_sweep(tmp_path, tmp_path / "data", GRID + '\n[budget]\ngpu_hours = 1.0\ngpu = "H200"\nmfu = 0.5\n')
    proc = run_main(capsys, "sweep", "run", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    costs = grid_cost(path)
    assert costs[1] > costs[0] > 0  # a wider CNN costs more
    lines = proc.stdout.splitlines()
    assert lines[1].strip().startswith(f"base_channels=8: 30 steps, {costs[0]:.3g} FLOPs")
    assert lines[2].strip().startswith(f"base_channels=16: 30 steps, {costs[1]:.3g} FLOPs")
    total = sum(costs)
    assert lines[3].strip() == f"total: {total:.3g} FLOPs, {gpu_hours(total, 'H200', 0.5):.3g} GPU-hours"
    assert lines[4].strip().endswith("within budget")
    assert not (tmp_path / "root").exists()  # no study, no run directory, nothing queued


def test_a_sweep_over_its_budget_is_refused_before_anything_is_created(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    path = write_sweep(tmp_path, tmp_path / "data", GRID)
    budget = sum(grid_cost(path)) * 0.9
    path.write_text(path.read_text() + f"\n[budget]\nflops = {budget}\n")
    for args in (["sweep", "run", str(path)], ["sweep", "run", str(path), "--dry-run"], ["study", str(path)]):
        proc = run_main(capsys, *args)
        assert proc.returncode == 2, args
        assert proc.stderr.strip().splitlines()[-1].startswith("scaling: error: budget: the sweep plans "), args
        assert not (tmp_path / "root").exists() and not (tmp_path / "data").exists(), args


def test_a_search_is_planned_at_its_costliest_point(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, tmp_path / "data", '''
[search]
n_trials = 3
[search.space."model.base_channels"]
type = "int"
low = 8
high = 16
''')
    spec = load_sweep(path)
    (plan,) = forecast(spec)
    assert plan.count == 3 and "base_channels=16" in plan.label
    assert total_flops([plan]) == 3 * run_flops(spec.trial_config({"model.base_channels": 16}, spec.run_dir(0)))


def test_an_isoflop_grid_sizes_each_trial_to_spend_its_budget(tmp_path: Path) -> None:
    """Budgets and sizes instead of step counts: each trial's steps are those whose FLOPs come nearest its budget
    (within half a step), so a larger tokenizer takes fewer steps; the dry run prints them."""
    budgets = [4e11, 1.2e12]
    path = write_sweep(tmp_path, tmp_path / "data", f'''
[grid]
mode = "product"
[grid.axes]
"train.flops_budget" = {budgets}
"model.base_channels" = [8, 16]
''')
    spec = load_sweep(path)
    plans = forecast(spec)
    steps = {}
    for point, plan in zip(spec.grid_points(), plans):
        cfg = spec.trial_config(point, spec.run_dir(0))
        per_step = step_flops_done(step_flops(cfg), 1, cfg.train.batch_size, cfg.loss.gan_start)  # no GAN: constant
        assert abs(plan.flops - point["train.flops_budget"]) <= per_step / 2, (point, plan)
        assert plan.flops == per_step * plan.steps
        steps[point["train.flops_budget"], point["model.base_channels"]] = plan.steps
    for budget in budgets:
        assert steps[budget, 16] < steps[budget, 8]
    assert steps[1.2e12, 8] > steps[4e11, 8]


@pytest.mark.slow  # trains one tiny trial
def test_the_driver_queues_no_trial_that_would_cross_the_budget(synth_data: Path, tmp_path: Path) -> None:
    """Run the driver directly (the command line would refuse the sweep outright): the first trial fits, the
    second would cross the budget, so it fails unqueued and the sweep ends. The first was asked by a driver
    killed after counting its FLOPs against the budget but before queueing it: the next one queues it through the
    same budget check, without counting it twice (the budget holds it once, not twice)."""
    path = write_sweep(tmp_path, synth_data, GRID, max_concurrent=1)
    costs = grid_cost(path)
    assert costs[1] > costs[0]
    path.write_text(path.read_text() + f"\n[budget]\nflops = {1.5 * costs[0]}\n")
    spec = load_sweep(path)
    spec.root_dir().mkdir(parents=True)
    killed = open_study(spec)
    enqueue_points(spec, killed)
    asked = killed.ask(distributions(spec))  # the killed driver's last acts
    asked.set_user_attr("planned_flops", costs[0])
    assert asked.number == 0
    study = run_sweep(spec, poll_s=0.5)
    first, second = sorted(study.trials, key=lambda t: t.number)
    assert first.state == optuna.trial.TrialState.COMPLETE and first.user_attrs["planned_flops"] == costs[0]
    assert first.user_attrs["run_dir"] == str(spec.run_dir(0)) and len(read_jobs(spec.run_dir(0))) == 1
    assert second.state == optuna.trial.TrialState.FAIL and "planned_flops" not in second.user_attrs
    assert second.user_attrs["error"].startswith("budget: ")
    assert not (tmp_path / "root" / "trial-0001" / "jobs.jsonl").exists()  # never queued
    assert study.user_attrs["budget_reached"]
