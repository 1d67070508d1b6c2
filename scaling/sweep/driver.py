"""``scaling sweep run``: Optuna ask-and-tell over submitit jobs, resumable after the driver is killed.

The study's storage is the sweep's only state. Each trial owns one run directory, ``ROOT/trial-NNNN`` (its
number), so what a trial's job did is always found in the same place (``RunDir``): its job history (every job
that submit queued), its events (start, finished, pruned, ...) and its MLflow run id. A RUNNING trial is therefore
always in one of these cases, whatever moment the previous driver died at:

- a live job in its run directory (queued, running, requeued; a single job or its task of a job array, which
  the directory points to before the array is queued): adopted and polled, never duplicated;
- no live job, the run finished or was pruned: told COMPLETE (the objective from its MLflow run) or PRUNED;
- no live job, the run unfinished or never launched: (re)launched on the same directory, which resumes from
  its checkpoints, up to ``max_launches`` jobs; then FAIL.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from scaling.core.errors import UserError
from scaling.launch.job import measured
from scaling.launch.profile import ClusterProfile, load_profile
from scaling.launch.status import cancel as cancel_run
from scaling.launch.submit import Prepared, drop_array_pointers, queue, record_job
from scaling.launch.submit import prepare as prepare_run
from scaling.launch.status import job_state, read_jobs, scancel, slurm_states, unrecorded_jobs
from scaling.core.config import Config
from scaling.plan.cost import own_flops, trunk_flops
from scaling.sweep.budget import limit_flops
from scaling.sweep.spec import SweepSpec, sweep_params
from scaling.sweep.search import (BRANCH_ATTR, TrialReporter, describe, distributions, enqueue_points, open_study,
                                 to_ask, trial_params, trunk_of)
from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import TrackingConfig
from scaling.core.run_dir import RunDir
from scaling.tracking.mlflow_tracker import Tracker, tracking_uri

PARENT_ATTR, CANCEL_ATTR = "mlflow_parent_run_id", "cancelled"
PLANNED_ATTR, BUDGET_ATTR = "planned_flops", "budget_reached"
FLOPS_METRIC = "train/flops"  # what a training run logs of its compute (``scaling.plan.count.step_flops_done``)


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


@dataclass
class Sweep:
    """A loaded sweep: its spec, study, cluster profile and MLflow parent run."""

    spec: SweepSpec
    study: optuna.Study
    profile: ClusterProfile
    parent: Tracker

    @property
    def profile_name(self) -> str:
        return self.spec.profile_name

    @property
    def parent_run_id(self) -> str:
        return self.parent.run_id or ""


def run_sweep(spec: SweepSpec, poll_s: float = 2.0) -> optuna.Study:
    """Create or continue the study, keep ``max_concurrent`` trials in flight until every trial is told."""
    profile = local_share(load_profile(spec.profile), spec.max_concurrent)  # a bad profile fails first
    spec.root_dir().mkdir(parents=True, exist_ok=True)
    study = open_study(spec)
    study.set_user_attr(CANCEL_ATTR, False)
    enqueue_points(spec, study)
    sweep = Sweep(spec, study, profile, parent_run(spec, study))
    log(f"sweep {spec.name}: study in {spec.storage_url()}, MLflow parent run {sweep.parent_run_id}")
    while not study.user_attrs.get(CANCEL_ATTR):
        try:
            states = scheduler_states(profile.executor)
        except UserError as e:  # never read an unanswering scheduler as "every job ended"
            log(f"{e}; retrying")
            time.sleep(poll_s)
            continue
        trials = study.get_trials(deepcopy=False)  # one read of the storage per poll (0.3 s at 100 trials)
        in_flight = sum(supervise(sweep, t, states) for t in trials if t.state == TrialState.RUNNING)
        left = 0 if study.user_attrs.get(BUDGET_ATTR) else to_ask(spec, trials)
        waiting = sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number)
        asked = []
        for i in range(min(max(spec.max_concurrent - in_flight, 0), left)):  # Optuna asks the oldest waiting first
            if study.user_attrs.get(CANCEL_ATTR) or (i < len(waiting) and not ready(spec, waiting[i], trials)):
                break
            asked.append(study.ask(distributions(spec)))
            left -= 1
        in_flight += launch(sweep, asked)
        if not in_flight and not left:
            break
        time.sleep(poll_s)
    finish_parent(sweep)
    return study


def ready(spec: SweepSpec, t: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """A waiting trial may be asked, unless it is a cooldown branch whose trunk is unfinished and has no
    checkpoint at the branch's step yet (a trunk that ended without one fails its branch in pre-flight)."""
    trunk = trunk_of(t, trials)
    if trunk is None or trunk.state.is_finished():
        return True
    return t.user_attrs[BRANCH_ATTR] in CheckpointStore(RunDir(spec.run_dir(trunk.number)).checkpoints).steps()


def trial_config(spec: SweepSpec, t: FrozenTrial, trials: list[FrozenTrial], parent_run_id: str = "") -> Config:
    """The trial's config (``trials``: the study's, where a branch's trunk is found). A cooldown branch's starts
    from its trunk's run directory at its step, and its MLflow run is a child of the trunk's
    (``train.branch.with_trunk_parent``), not of the sweep's."""
    run_dir, at = spec.run_dir(t.number), t.user_attrs.get(BRANCH_ATTR)
    if not at:
        return spec.trial_config(trial_params(t), run_dir, parent_run_id)
    return spec.trial_config(trial_params(t), run_dir, branch=(spec.run_dir(trunk_of(t, trials).number), at))


def supervise(sweep: Sweep, t: FrozenTrial, states: dict[str, str] | None) -> bool:
    """One RUNNING trial: adopt its live job, tell its outcome, or relaunch it. True while it is in flight."""
    run_dir = sweep.spec.run_dir(t.number)
    live = live_jobs(run_dir, sweep.profile.executor, sweep.profile_name, states)
    if live:
        if "job_id" not in t.user_attrs:  # the last driver died before recording it
            sweep.study._storage.set_trial_user_attr(t._trial_id, "job_id", live[-1]["job_id"])
        return True
    last = events.last(run_dir)
    probe_missing = sweep.spec.probe and not measured(run_dir)
    if last == "finished" and not probe_missing:
        tell_complete(sweep, t, run_dir)
    elif last == "pruned":
        tell(sweep, t, TrialState.PRUNED, run_dir)
    elif last == "cancelled":
        tell(sweep, t, TrialState.FAIL, run_dir, cancelled=True)
    elif (n := launches(run_dir)) == 0:  # asked by a driver killed before it queued it: queued as if just asked
        return launch(sweep, [t]) > 0
    elif n >= sweep.spec.max_launches:
        tell(sweep, t, TrialState.FAIL, run_dir, error=f"{n} jobs ended without finishing")
    else:
        return relaunch(sweep, t)
    return False


def launch(sweep: Sweep, asked: list[optuna.Trial] | list[FrozenTrial]) -> int:
    """Newly asked trials, queued together (one job array where the profile allows); how many were queued.
    Each run directory is fixed by the trial's number (``launched`` and ``tell`` record it)."""
    ready = [r for r in (prepare(sweep, sweep.study._storage.get_trial(t._trial_id)) for t in asked) if r]
    ready = within_budget(sweep, ready)
    if not ready:
        return 0
    folder = sweep.spec.root_dir() / "arrays" / f"trial-{ready[0][0].number:04d}"
    jobs = queue([run for _, run in ready], sweep.profile, sweep.profile_name, sweep.spec.probe, folder)
    for (t, _), job in zip(ready, jobs):
        launched(sweep, t, job)
    return len(ready)


def within_budget(sweep: Sweep, ready: list[tuple[FrozenTrial, Prepared]]) -> list[tuple[FrozenTrial, Prepared]]:
    """The trials that fit in what is left of the budget, in order; the first that would cross it, and every one
    after it, fails unqueued and no further trial is asked. Each queued trial records its planned FLOPs (with a
    budget: without one nothing is counted here)."""
    limit = limit_flops(sweep.spec)
    if limit is None:
        return ready
    queuing = {t.number for t, _ in ready}  # one a killed driver counted but never queued is counted again below
    planned = sum(t.user_attrs.get(PLANNED_ATTR, 0) for t in sweep.study.get_trials(deepcopy=False)
                  if t.number not in queuing)
    out = []
    for t, run in ready:
        flops = own_flops(run.cfg)
        if planned + flops > limit or sweep.study.user_attrs.get(BUDGET_ATTR):
            sweep.study.set_user_attr(BUDGET_ATTR, True)
            tell(sweep, t, TrialState.FAIL, run.run_dir,
                 error=f"budget: {flops:.3g} FLOPs more would cross the budget of {limit:.3g} ({planned:.3g} planned)")
            continue
        sweep.study._storage.set_trial_user_attr(t._trial_id, PLANNED_ATTR, flops)
        planned += flops
        out.append((t, run))
    return out


def local_share(profile: ClusterProfile, max_concurrent: int) -> ClusterProfile:
    """On the local executor the concurrent trials share this machine's cores: each gets at most its share."""
    share = max(1, (os.cpu_count() or 1) // max_concurrent)
    if profile.executor != "local" or profile.cpus_per_task <= share:
        return profile
    log(f"local executor: {max_concurrent} trials at once on {os.cpu_count()} cores, {share} CPU(s) each")
    return replace(profile, cpus_per_task=share)


def relaunch(sweep: Sweep, t: FrozenTrial) -> bool:
    """A trial whose job ended unfinished, queued again on its run directory (which resumes from its
    checkpoints), alone."""
    ready = prepare(sweep, t)
    if ready:
        launched(sweep, t, queue([ready[1]], sweep.profile, sweep.profile_name, sweep.spec.probe)[0])
    return ready is not None


def prepare(sweep: Sweep, t: FrozenTrial) -> tuple[FrozenTrial, Prepared] | None:
    """The trial's config through every pre-flight check (``launch.submit.prepare``); a refused one fails the
    trial, and None is returned."""
    spec = sweep.spec
    run_dir = spec.run_dir(t.number)
    reporter = None
    if spec.pruner.kind != "none":
        reporter = TrialReporter(spec.storage_url(), spec.name, t._trial_id, spec.pruner.metric, sweep.study.pruner)
    try:
        cfg = trial_config(spec, t, sweep.study.get_trials(deepcopy=False), sweep.parent_run_id)
        prepare_run(cfg, sweep.profile, spec.probe)
    except UserError as e:
        tell(sweep, t, TrialState.FAIL, run_dir, error=str(e))
        return None
    return t, Prepared(cfg, run_dir, reporter)


def launched(sweep: Sweep, t: FrozenTrial, job: Any) -> None:
    # Optuna has no public setter for another process's trial; the storage call is what Trial.set_user_attr does.
    # The run directory is recorded here and in ``tell``, not at ``ask``: a driver killed in between leaves a
    # RUNNING trial with nothing queued, which the next one relaunches through here.
    run_dir = sweep.spec.run_dir(t.number)
    sweep.study._storage.set_trial_user_attr(t._trial_id, "run_dir", str(run_dir))
    sweep.study._storage.set_trial_user_attr(t._trial_id, "job_id", str(job.job_id))
    log(f"trial {t.number} {'relaunched' if launches(run_dir) > 1 else 'launched'}: job {job.job_id}, "
        f"{describe(trial_params(t), t.user_attrs.get(BRANCH_ATTR))}, {run_dir}")


def scheduler_states(executor: str) -> dict[str, str] | None:
    """One snapshot of the Slurm queue per poll; None for the local executor (a job is a process)."""
    return slurm_states() if executor == "slurm" else None


def live_jobs(run_dir: Path, executor: str, profile_name: str, states: dict[str, str] | None) -> list[dict[str, Any]]:
    """The run's queued or running jobs. Jobs that submitit queued but the driver did not record (it was
    killed in between: ``unrecorded_jobs``) are recorded first, so that none is ever duplicated. A dependent
    probe job left waiting behind a training job that did not finish is cancelled."""
    for job in unrecorded_jobs(run_dir, executor):
        record_job(run_dir, job["job_id"], executor, profile_name, kind=job["kind"])
    drop_array_pointers(run_dir)  # what they led to is recorded now: later polls need not look there again
    live = [j for j in read_jobs(run_dir) if j.get("executor") and job_state(j, states) != "ENDED"]
    if live and all(j.get("kind") == "probe" for j in live) and events.last(run_dir) != "finished":
        for j in live:
            cancel_job(j)
        return []
    return live


def launches(run_dir: Path) -> int:
    return sum(1 for j in read_jobs(run_dir) if j.get("kind", "train") == "train")


def training(run_dir: Path, jobs: list[dict[str, Any]]) -> bool:
    """The newest job has started training, so it handles TERM (checkpoint, stop). One still starting up
    would ignore TERM (submitit's handler does until the trainer installs its own): it is ended outright."""
    return bool(jobs) and any(e["event"] == "start" and e["job"] == jobs[-1]["job_id"] for e in events.read(run_dir))


def cancel_job(job: dict[str, Any]) -> None:
    """End a job outright (one that has nothing to save: a waiting probe, an unrecorded duplicate)."""
    if job["executor"] == "slurm":
        try:
            scancel(job["job_id"])
        except UserError as e:  # nothing to end is not worth stopping the sweep for
            log(str(e))
    else:
        try:
            os.kill(int(job["job_id"]), signal.SIGTERM)
        except ProcessLookupError:
            pass


def tell_complete(sweep: Sweep, t: FrozenTrial, run_dir: Path) -> None:
    metric = sweep.spec.objective.metric
    value = run_metric(sweep.spec, run_dir, metric)
    if value is None:
        tell(sweep, t, TrialState.FAIL, run_dir, error=f"objective {metric}: not in the trial's MLflow run")
    else:
        tell(sweep, t, TrialState.COMPLETE, run_dir, value=value)


def tell(sweep: Sweep, t: FrozenTrial, state: TrialState, run_dir: Path, value: float | None = None,
         **attrs: Any) -> None:
    """Record the trial's outcome (user attrs first: a finished trial is read-only)."""
    storage = sweep.study._storage
    attrs["run_dir"] = str(run_dir)
    run_id = RunDir(run_dir).run_id()
    if run_id is not None:
        attrs["mlflow_run_id"] = run_id
        client = _client(sweep.spec)  # tags the analysis selects a sweep's runs by
        client.set_tag(attrs["mlflow_run_id"], "sweep", sweep.spec.name)
        client.set_tag(attrs["mlflow_run_id"], "sweep.trial", str(t.number))
    for key, v in attrs.items():
        storage.set_trial_user_attr(t._trial_id, key, v)
    sweep.study.tell(t.number, value if state == TrialState.COMPLETE else None, state=state)
    log(f"trial {t.number} {state.name}" + (f": {sweep.spec.objective.metric} = {value:.4g}" if value is not None else "")
        + (f" ({attrs['error']})" if "error" in attrs else ""))


def run_metric(spec: SweepSpec, run_dir: Path, key: str) -> float | None:
    """The last value of ``key`` in the trial's MLflow run."""
    run_id = RunDir(run_dir).run_id()
    if run_id is None:
        return None
    return _client(spec).get_run(run_id).data.metrics.get(key)


def _client(spec: SweepSpec):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri(TrackingConfig(uri=spec.tracking.uri)))


def parent_run(spec: SweepSpec, study: optuna.Study) -> Tracker:
    """The sweep's MLflow run, its definition as params; the trials' runs are its children. A Tracker on the
    sweep's root: a re-run driver reopens the same run (its id kept in the root), as a resumed training does."""
    cfg = TrackingConfig(uri=spec.tracking.uri, experiment=spec.tracking.experiment, run_name=f"sweep-{spec.name}")
    tracker = Tracker(cfg, spec.root_dir())
    study.set_user_attr(PARENT_ATTR, tracker.start(sweep_params(spec), run_name=cfg.run_name))
    return tracker


def finish_parent(sweep: Sweep) -> None:
    """Trial counts, the training FLOPs all trials' runs logged and the best value on the parent run (at step =
    trials told so far); FINISHED when the sweep is done, KILLED when cancelled."""
    trials = sweep.study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    metrics = {f"sweep/{key}": n for key, n in counts.items()}
    spent = [spent_flops(sweep.spec, t, trials) for t in trials]
    metrics["sweep/train_flops"] = sum(f for f in spent if f is not None)  # what every trial's run spent itself
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done:
        best = sweep.study.best_trial
        metrics |= {f"sweep/best_{sweep.spec.objective.metric.replace('/', '_')}": best.value,
                    "sweep/best_trial": best.number}
    sweep.parent.log_metrics(metrics, step=sum(t.state.is_finished() for t in trials))
    sweep.parent.finish(status="KILLED" if sweep.study.user_attrs.get(CANCEL_ATTR) else "FINISHED")
    log(f"sweep {sweep.spec.name}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        + (f"; best trial {best.number}: {best.value:.4g}" if done else ""))


def spent_flops(spec: SweepSpec, t: FrozenTrial, trials: list[FrozenTrial]) -> float | None:
    """The training FLOPs the trial's run logged, less, for a cooldown branch, its trunk's share (counted once,
    in the trunk's trial); None before its run logged any."""
    logged = run_metric(spec, spec.run_dir(t.number), FLOPS_METRIC) if spec.run_dir(t.number).is_dir() else None
    if logged is None or not t.user_attrs.get(BRANCH_ATTR):
        return logged
    return logged - trunk_flops(trial_config(spec, t, trials))


@dataclass
class TrialRow:
    number: int
    params: str
    state: str
    step: int | None
    value: float | None
    job_id: str
    flops: float | None  # training FLOPs so far: the last train/flops its run logged (a branch: less its trunk's)


def trial_rows(spec: SweepSpec) -> list[TrialRow]:
    """What ``scaling sweep status`` prints: a RUNNING trial's state is its job's (PENDING, RUNNING, ...)."""
    study = open_study(spec, create=False)
    states = scheduler_states(load_profile(spec.profile).executor)
    rows = []
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        run_dir = spec.run_dir(t.number)
        state = "CANCELLED" if t.user_attrs.get(CANCEL_ATTR) else t.state.name
        jobs = read_jobs(run_dir)
        if t.state == TrialState.RUNNING:
            state = job_state(jobs[-1], states) if jobs else "LAUNCHING"
        step = CheckpointStore(RunDir(run_dir).checkpoints).latest() if run_dir.is_dir() else None
        flops = spent_flops(spec, t, trials)
        rows.append(TrialRow(t.number, describe(trial_params(t), t.user_attrs.get(BRANCH_ATTR)), state,
                             step if step is not None else t.last_step, t.value,
                             t.user_attrs.get("job_id", jobs[-1]["job_id"] if jobs else "-"), flops))
    return rows


def cancel_sweep(spec: SweepSpec) -> list[str]:
    """Stop the driver (at its next poll) and every running trial's job; the trials become FAIL, marked
    ``cancelled``. Waiting grid points stay queued: ``scaling sweep run`` continues with them."""
    study = open_study(spec, create=False)
    study.set_user_attr(CANCEL_ATTR, True)
    executor = load_profile(spec.profile).executor
    states = scheduler_states(executor)
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_dir = spec.run_dir(t.number)
        live = live_jobs(run_dir, executor, spec.profile_name, states)
        jobs = read_jobs(run_dir)
        what = "not running"
        if training(run_dir, jobs):
            what = cancel_run(run_dir)  # TERM: the trainer checkpoints and stops
            live = [j for j in live if j["job_id"] != jobs[-1]["job_id"]]
        for job in live:  # nothing to save: still starting, unrecorded, or a probe waiting on the training
            cancel_job(job)
            what = f"ended job {job['job_id']}" if what == "not running" else what
        study._storage.set_trial_user_attr(t._trial_id, CANCEL_ATTR, True)
        study.tell(t.number, state=TrialState.FAIL)
        out.append(f"trial {t.number}: {what}")
    return out
