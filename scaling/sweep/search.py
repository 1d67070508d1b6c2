"""The Optuna side of a sweep: its storage, study, sampler and pruner, and the reporter that training jobs
call at every validation so that the pruner sees every trial, whichever process or node it runs in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from scaling.sweep.spec import BASE_AXIS, Distribution, Pruner, SweepSpec

BRANCH_ATTR = "branch_step"  # a cooldown branch's trial: the step of its trunk (the trial of the same point) it starts at


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """``journal:PATH`` (a file, for shared filesystems without reliable locks) or an RDB URL."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    # sqlite: wait for a writer (the driver and the jobs' reports share the file) instead of failing at once
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def open_study(spec: SweepSpec, create: bool = True) -> optuna.Study:
    """Create the sweep's study, or load it; a grid's points are enqueued once (see ``enqueue_points``)."""
    if not create:
        from scaling.core.errors import UserError

        url = spec.storage_url()
        never_run = UserError(f"sweep {spec.name}: no study in {url} (not run yet: 'scaling sweep run')")
        local = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url.removeprefix("journal:")
        if local != url and not Path(local).is_file():  # opening would create an empty store, or fail obscurely
            raise never_run
        try:
            return optuna.load_study(study_name=spec.name, storage=open_storage(url))
        except KeyError:
            raise never_run from None
    storage = open_storage(spec.storage_url())
    sampler = optuna.samplers.TPESampler(seed=spec.seed)  # a grid's trials are all enqueued: never sampled
    return optuna.create_study(study_name=spec.name, storage=storage, sampler=sampler,
                               pruner=build_pruner(spec.pruner, max_steps(spec)),
                               direction=spec.objective.direction, load_if_exists=True)


def enqueue_points(spec: SweepSpec, study: optuna.Study) -> None:
    """Every grid point (or the search's first points) as a WAITING trial, then each cooldown branch of every point
    (earliest branch step first), unless a trial already has it, so a driver killed half-way through enqueues only
    what is missing. (Optuna's ``skip_if_exists`` does this check by reading every trial for every point: 24 s
    for 200 points; here they are read once.)"""
    seen = [(t.system_attrs.get("fixed_params", t.params), t.user_attrs.get(BRANCH_ATTR))
            for t in study.get_trials(deepcopy=False)]
    points = spec.grid_points() if spec.is_grid else spec.search.enqueue
    wanted = [(p, None) for p in points] + [(p, at) for at in sorted(spec.branches.at) for p in points]
    for point, at in wanted:
        if (point, at) not in seen:
            study.enqueue_trial(point, user_attrs={BRANCH_ATTR: at} if at else None)


def trunk_of(t: FrozenTrial, trials: list[FrozenTrial]) -> FrozenTrial | None:
    """A branch's trunk: the trial of its grid point that is no branch; None for a trial that is no branch."""
    if t.user_attrs.get(BRANCH_ATTR) is None:
        return None
    point = trial_params(t)
    return next(u for u in trials if u.user_attrs.get(BRANCH_ATTR) is None and trial_params(u) == point)


def to_ask(spec: SweepSpec, trials: list[FrozenTrial]) -> int:
    """Trials still to ask, given the study's trials: enqueued points, and for a search the trials short of
    n_trials."""
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return waiting if spec.is_grid else waiting + max(spec.search.n_trials - len(trials), 0)


def distributions(spec: SweepSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """What ``study.ask`` suggests: a grid's axes as categoricals (their enqueued values are fixed)."""
    if spec.is_grid:
        return {key: optuna.distributions.CategoricalDistribution(values) for key, values in spec.grid.axes.items()}
    return {key: _distribution(d) for key, d in spec.search.space.items()}


def _distribution(d: Distribution) -> optuna.distributions.BaseDistribution:
    if d.type == "categorical":
        return optuna.distributions.CategoricalDistribution(d.choices)
    if d.type == "int":
        return optuna.distributions.IntDistribution(int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
    return optuna.distributions.FloatDistribution(d.low, d.high, log=d.log, step=d.step)


def max_steps(spec: SweepSpec) -> int:
    point = spec.grid_points()[0] if spec.is_grid else {}
    return spec.trial_config(point, spec.run_dir(0)).train.steps


def build_pruner(p: Pruner, max_resource: int) -> optuna.pruners.BasePruner:
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=max_resource,
                                              reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def trial_params(trial: optuna.trial.FrozenTrial | optuna.Trial) -> dict[str, Any]:
    """The trial's values, a grid point's included before it was asked."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))


def describe(params: dict[str, Any], branch_step: int | None = None) -> str:
    words = " ".join(f"{k.rsplit('.', 1)[-1] if k != BASE_AXIS else k}={_short(v)}" for k, v in params.items())
    return words + (f" branch@{branch_step}" if branch_step else "")


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class TrialReporter:
    """Called by the training job at each validation: report the pruner's metric to the trial in the study's
    storage and ask the pruner. True stops the training (it checkpoints and records ``pruned``). Picklable:
    it travels with the job and opens the storage itself."""

    def __init__(self, storage_url: str, study_name: str, trial_id: int, metric: str, pruner: optuna.pruners.BasePruner):
        self.storage_url, self.study_name, self.trial_id = storage_url, study_name, trial_id
        self.metric, self.pruner = metric, pruner
        self._study: optuna.Study | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None}

    def __call__(self, step: int, metrics: dict[str, float]) -> bool:
        if self.metric not in metrics:
            return False
        if self._study is None:
            self._study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage_url),
                                            pruner=self.pruner)
        if self._study._storage.get_trial(self.trial_id).state != TrialState.RUNNING:
            return True  # told already (cancelled, failed): stop at once
        trial = optuna.Trial(self._study, self.trial_id)
        trial.report(metrics[self.metric], step)  # a resumed job's repeated steps are ignored (with a warning)
        return trial.should_prune()
