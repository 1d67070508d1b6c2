"""A sweep's planned cost (``scaling sweep run --dry-run``) and its budget: FLOPs per trial from the planner
(``plan.cost.run_flops``: what each run will log as ``train/flops``), GPU-hours at the budget's GPU and MFU.
A sweep planned over its budget is refused before anything is queued; while it runs, no trial that would cross
the budget is queued. A cooldown branch costs its own steps (those before its branch step were its trunk's).
The AR probe's cost is not counted."""

from __future__ import annotations

from dataclasses import dataclass

from scaling.core.errors import UserError
from scaling.plan.cost import gpu_hours, own_flops, peak_tflops, planned_run
from scaling.plan.count import step_flops
from scaling.sweep.search import describe
from scaling.sweep.spec import SweepSpec, space_corners


@dataclass
class TrialPlan:
    label: str  # the trial's values
    flops: int
    steps: int
    count: int = 1  # trials of this cost (a search: n_trials, each at most this)


def forecast(spec: SweepSpec) -> list[TrialPlan]:
    """A grid: every point's cost, then each cooldown branch's. A search: ``n_trials`` trials at the costliest
    corner of its space (an upper bound: Optuna chooses the points as it goes)."""
    def cost(point: dict) -> TrialPlan:
        steps, flops = planned_run(spec.trial_config(point, spec.run_dir(0)))
        return TrialPlan(describe(point), flops, steps)

    if spec.is_grid:
        points = spec.grid_points()
        trunks = [spec.trial_config(p, spec.run_dir(0)) for p in points]
        parts = [step_flops(cfg) for cfg in trunks]  # counted once per point: its branches' are the trunk's
        plans = []
        for point, cfg, n in zip(points, trunks, parts):
            steps, flops = planned_run(cfg, n)
            plans.append(TrialPlan(describe(point), flops, steps))
        for at in sorted(spec.branches.at):
            for point, n in zip(points, parts):
                cfg = spec.trial_config(point, spec.run_dir(1), branch=(spec.run_dir(0), at))
                plans.append(TrialPlan(describe(point, at), own_flops(cfg, n), cfg.train.steps - at))
        return plans
    corners = [dict(p) for p in spec.search.enqueue] + space_corners(spec.search.space)
    costly = max((cost(point) for point in corners), key=lambda plan: plan.flops)  # each point counted once
    return [TrialPlan(f"each at most (at {costly.label})", costly.flops, costly.steps, spec.search.n_trials)]


def total_flops(plans: list[TrialPlan]) -> int:
    return sum(p.flops * p.count for p in plans)


def limit_flops(spec: SweepSpec) -> float | None:
    """The budget in FLOPs (the smaller of the two where both are set); None without a budget."""
    b = spec.budget
    limits = [b.flops] if b.flops else []
    if b.gpu_hours:
        limits.append(b.gpu_hours * 3600 * peak_tflops(b.gpu) * 1e12 * b.mfu)
    return min(limits) if limits else None


def plan_lines(spec: SweepSpec, plans: list[TrialPlan]) -> list[str]:
    """The plan as printed: one line per trial, the total, the budget's verdict."""
    b = spec.budget
    hours = lambda flops: gpu_hours(flops, b.gpu, b.mfu)  # noqa: E731
    lines = [f"sweep {spec.name}: planned cost (training FLOPs as the planner counts them; GPU-hours on {b.gpu} at "
             f"{100 * b.mfu:g}% MFU; the probe not counted)"]
    for p in plans:
        times = f"{p.count} x " if p.count > 1 else ""
        lines.append(f"  {times}{p.label}: {p.steps} steps, {p.flops:.3g} FLOPs, {hours(p.flops):.3g} GPU-hours")
    total = total_flops(plans)
    lines.append(f"  total: {total:.3g} FLOPs, {hours(total):.3g} GPU-hours")
    limit = limit_flops(spec)
    if limit is not None:
        verdict = "within" if total <= limit else "OVER"
        lines.append(f"  budget: {limit:.3g} FLOPs ({hours(limit):.3g} GPU-hours): {verdict} budget")
    return lines


def check_budget(spec: SweepSpec, plans: list[TrialPlan]) -> None:
    """A sweep planned over its budget: one line, before anything is created or queued."""
    limit, total = limit_flops(spec), total_flops(plans)
    if limit is not None and total > limit:
        b = spec.budget
        raise UserError(f"budget: the sweep plans {total:.3g} FLOPs ({gpu_hours(total, b.gpu, b.mfu):.3g} GPU-hours on "
                        f"{b.gpu} at {100 * b.mfu:g}% MFU), over its budget of {limit:.3g} FLOPs; raise budget.flops / "
                        "budget.gpu_hours or shrink the sweep")


def plan_sweep(spec: SweepSpec) -> list[TrialPlan]:
    """Print the sweep's planned cost and refuse it, in one line, if it is over its budget: the first thing
    ``scaling sweep run`` and ``scaling study`` do, before anything is created or queued."""
    plans = forecast(spec)
    for line in plan_lines(spec, plans):
        print(line, flush=True)
    check_budget(spec, plans)
    return plans
