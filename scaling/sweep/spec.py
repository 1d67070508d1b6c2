"""A sweep file (``sweeps/*.toml``) as a typed, validated ``SweepSpec``.

Every problem is a ``ConfigError`` with one line naming the file and the key, raised before anything is
created or launched. Each trial's config is loaded (base, overrides, the trial's values) as part of the check.
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.core.config import Config, ConfigError
from scaling.core.errors import UserError
from scaling.core.paths import check_dir_path
from scaling.core.config.loader import config_to_dict, flatten, from_dict, read_toml, set_dotted
from scaling.models.factory import load_config
from scaling.train.branch import lr_departure

BASE_AXIS = "base"  # a grid axis over shipped configs (e.g. the GigaTok sizes), beside config keys
CONFIG_KEYS = tuple(flatten(config_to_dict(Config())))
# The sweep decides where each trial runs and how it is tracked.
SWEEP_OWNED = ("train.run_dir", "tracking.uri", "tracking.experiment", "tracking.parent_run_id")


@dataclass
class Distribution:
    """One search-space entry: optuna's FloatDistribution, IntDistribution or CategoricalDistribution."""

    type: str = ""  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)


@dataclass
class Grid:
    mode: str = "product"  # product: every combination; zip: the i-th value of every axis together
    axes: dict[str, Any] = field(default_factory=dict)  # config key (or "base") -> list of values


@dataclass
class Search:
    n_trials: int = 0
    space: dict[str, Distribution] = field(default_factory=dict)  # config key -> distribution
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # points tried first (optuna enqueue_trial)


@dataclass
class Objective:
    metric: str = "val/psnr"  # an MLflow metric of the trial's run; its last value is the trial's value
    direction: str = "maximize"  # maximize | minimize


@dataclass
class Pruner:
    kind: str = "none"  # none | median | hyperband
    metric: str = "val/psnr"  # the validation metric reported at every train.val_every
    n_startup_trials: int = 2  # median: trials finished before any pruning
    n_warmup_steps: int = 0  # median: steps before a trial may be pruned
    min_resource: int = 1  # hyperband, in training steps
    reduction_factor: int = 3  # hyperband


@dataclass
class Tracking:
    uri: str = ""  # empty: MLFLOW_TRACKING_URI, else MLflow's default local store
    experiment: str = "sweeps"


@dataclass
class SynthData:
    """The synthetic dataset a study generates first (``scaling data synth``); its trials train on it."""

    path: str = "data/synth"
    classes: int = 10
    train: int = 2000
    val: int = 256
    size: int = 32
    seed: int = 0


@dataclass
class StudyTeacher:
    """The small teacher a study trains first (``scaling.sweep.teacher``); its trials' semantic teacher."""

    model: str = "test_vit"  # a timm ViT name
    size: int = 64  # input side: the trials' loss.semantic_teacher_size
    epochs: int = 15
    batch_size: int = 100
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0


@dataclass
class Study:
    """What ``scaling study`` does around the sweep: data and teacher before, the report after."""

    synth: SynthData | None = None  # generate this dataset first: the trials' data.train / data.val
    teacher: StudyTeacher | None = None  # train this teacher first: the trials' loss.semantic_teacher*
    report: str = ""  # the report's directory; empty: ROOT/report
    bootstrap: int = 400  # bootstrap replicates per fit
    sensitivity: bool = True  # the report's sensitivity refits


@dataclass
class Budget:
    """What a sweep may spend (0: no limit), checked before anything is queued and before each trial."""

    flops: float = 0.0  # training FLOPs of all trials together (as runs log train/flops)
    gpu_hours: float = 0.0  # the same in GPU-hours on ``gpu`` at ``mfu``
    gpu: str = "H100"  # the GPU GPU-hours are counted on (its bf16 dense peak): H100, H200, A100
    mfu: float = 0.13  # the share of that peak a step reaches (benchmarks/README.md measures it per preset)


@dataclass
class Branches:
    """Cooldown branches (``train.branch``): each grid point's run is a trunk, and at every step of ``at`` (in its
    stable phase) a branch starts from the trunk's checkpoint there and decays over ``decay_steps``: several data
    budgets per size, each at the cost of its decay alone."""

    at: list[int] = field(default_factory=list)  # trunk steps; each a multiple of train.ckpt_every
    decay_steps: int = 0  # each branch's decay (optim.decay_steps); it ends at its step + decay_steps


@dataclass
class SweepSpec:
    base: str = ""  # a shipped config name or a config file
    name: str = ""  # the Optuna study name; empty: the sweep file's stem
    root: str = ""  # trial run directories are ROOT/trial-NNNN; empty: runs/sweeps/NAME
    profile: str = "slurm/local.toml"
    max_concurrent: int = 2
    probe: bool = False  # AR-probe every trained tokenizer (submit's with_probe)
    storage: str = ""  # empty: sqlite file ROOT/optuna.db; journal:PATH; any RDB URL
    seed: int = 0  # the sampler's seed
    max_launches: int = 3  # jobs per trial (relaunches after a job died) before the trial fails
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted config keys, every trial
    grid: Grid = field(default_factory=Grid)
    search: Search = field(default_factory=Search)
    objective: Objective = field(default_factory=Objective)
    pruner: Pruner = field(default_factory=Pruner)
    tracking: Tracking = field(default_factory=Tracking)
    study: Study = field(default_factory=Study)
    budget: Budget = field(default_factory=Budget)
    branches: Branches = field(default_factory=Branches)

    @property
    def is_grid(self) -> bool:
        return bool(self.grid.axes)

    def root_dir(self) -> Path:
        return Path(self.root or f"runs/sweeps/{self.name}")

    @property
    def profile_name(self) -> str:
        """What a trial's job records as its profile (``slurm/dev.toml``: dev)."""
        return Path(self.profile).stem

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.root_dir() / 'optuna.db').resolve()}"

    def run_dir(self, number: int) -> Path:
        return self.root_dir() / f"trial-{number:04d}"

    def teacher_path(self) -> Path:
        return (self.root_dir() / "teacher" / "teacher.safetensors").resolve()

    def report_dir(self) -> Path:
        return Path(self.study.report or self.root_dir() / "report")

    def study_overrides(self) -> dict[str, Any]:
        """The config keys the study's own data and teacher set in every trial (the sweep's overrides win)."""
        out: dict[str, Any] = {}
        if self.study.synth:
            out |= {"data.train": f"{self.study.synth.path}/train", "data.val": f"{self.study.synth.path}/val"}
        if self.study.teacher:
            out |= {"loss.semantic_teacher": self.study.teacher.model, "loss.semantic_teacher_size":
                    self.study.teacher.size, "loss.semantic_teacher_weights": str(self.teacher_path())}
        return out

    def grid_points(self) -> list[dict[str, Any]]:
        keys, values = list(self.grid.axes), list(self.grid.axes.values())
        combos = zip(*values) if self.grid.mode == "zip" else itertools.product(*values)
        return [dict(zip(keys, combo)) for combo in combos]

    def trial_config(self, params: dict[str, Any], run_dir: Path, parent_run_id: str = "",
                     branch: tuple[Path, int] | None = None) -> Config:
        """The base config with the sweep's overrides, the trial's values and the sweep's own keys. ``branch``:
        (trunk's run directory, step) for a cooldown branch of the trunk at ``params``."""
        tree: dict[str, Any] = {}
        keys = {**self.study_overrides(), **self.overrides, **params}
        if self.branches.at and branch is None:  # a trunk keeps its checkpoints at the branch steps
            keys = {"train.milestone_every": math.gcd(*self.branches.at)} | keys
        if branch is not None:
            keys |= {"train.branch_from": str(branch[0]), "train.branch_step": branch[1], "train.flops_budget": 0,
                     "train.steps": branch[1] + self.branches.decay_steps,
                     "optim.decay_steps": self.branches.decay_steps}
        for key, value in keys.items():
            if key != BASE_AXIS:
                set_dotted(tree, key, value)
        owned = {"train.run_dir": str(run_dir), "tracking.experiment": self.tracking.experiment,
                 "tracking.parent_run_id": parent_run_id, "train.progress": False}
        if self.tracking.uri:
            owned["tracking.uri"] = self.tracking.uri
        for key, value in owned.items():
            set_dotted(tree, key, value)
        return load_config(params.get(BASE_AXIS, self.base), tree)


def load_sweep(path: str | Path) -> SweepSpec:
    """The validated sweep of a file; ConfigError (one line: file and key) otherwise."""
    path = Path(path)
    try:
        data = read_toml(path)
        data["overrides"] = flatten(data.get("overrides", {}))
        if isinstance(data.get("grid"), dict):
            data["grid"]["axes"] = flatten(data["grid"].get("axes", {}))
        search = data.get("search")
        if isinstance(search, dict) and isinstance(search.get("space"), dict):
            search["space"] = {key: from_dict(Distribution, d, f"search.space.{key}.")
                               for key, d in search["space"].items()}
        spec = from_dict(SweepSpec, data)
        spec.name = spec.name or path.stem
        validate(spec)
    except ConfigError as e:
        raise ConfigError(f"sweep {path}: {e}") from None
    return spec


def validate(spec: SweepSpec) -> None:
    if not spec.base:
        raise ConfigError("base: missing (a shipped config name or a config file)")
    if spec.is_grid == bool(spec.search.space):
        raise ConfigError("grid.axes / search.space: give exactly one (a grid or an Optuna search)")
    for key in spec.overrides:
        check_key(key, "overrides.")
    _check_choice("objective.direction", spec.objective.direction, ("maximize", "minimize"))
    _check_choice("pruner.kind", spec.pruner.kind, ("none", "median", "hyperband"))
    if spec.max_concurrent <= 0:
        raise ConfigError(f"max_concurrent: must be positive, got {spec.max_concurrent}")
    if spec.study.bootstrap < 0:
        raise ConfigError(f"study.bootstrap: must be >= 0, got {spec.study.bootstrap}")
    for key in ("flops", "gpu_hours"):
        if getattr(spec.budget, key) < 0:
            raise ConfigError(f"budget.{key}: must be >= 0, got {getattr(spec.budget, key):g}")
    if not 0 < spec.budget.mfu <= 1:
        raise ConfigError(f"budget.mfu: must be in (0, 1], got {spec.budget.mfu:g}")
    _check_choice("budget.gpu", spec.budget.gpu, ("H100", "H200", "A100"))
    if spec.storage.startswith("journal:") and not spec.storage[len("journal:"):]:
        raise ConfigError("storage: journal:PATH needs a path")
    try:
        check_dir_path(spec.root_dir(), "root")
    except UserError as e:
        raise ConfigError(str(e)) from None
    if spec.is_grid:
        _check_grid(spec.grid)
        points = spec.grid_points()
    else:
        _check_search(spec.search)
        points = [dict(p) for p in spec.search.enqueue] + space_corners(spec.search.space)
    for point in points:  # every trial's config must load: keys, types and values
        spec.trial_config(point, spec.run_dir(0))
    if spec.branches.at or spec.branches.decay_steps:
        _check_branches(spec, points)


def check_key(key: str, prefix: str) -> None:
    """A config key a sweep may set; a did-you-mean otherwise."""
    if key in SWEEP_OWNED:
        raise ConfigError(f"{prefix}{key}: set by the sweep (root, tracking), not per trial")
    if key not in CONFIG_KEYS:
        hint = difflib.get_close_matches(key, CONFIG_KEYS, n=1)
        raise ConfigError(f"{prefix}{key}: not a config key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: must be one of {', '.join(allowed)}, got {value!r}")


def _check_grid(grid: Grid) -> None:
    _check_choice("grid.mode", grid.mode, ("product", "zip"))
    for key, values in grid.axes.items():
        if key != BASE_AXIS:
            check_key(key, "grid.axes.")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.axes.{key}: must be a non-empty list of values")
        if any(isinstance(v, (list, dict)) for v in values):
            raise ConfigError(f"grid.axes.{key}: values must be numbers, strings or booleans")
        if grid.mode == "product" and (i := _repeat(values)) is not None:
            raise ConfigError(f"grid.axes.{key}: {values[i]!r} is listed twice (every grid point would run twice)")
    lengths = {key: len(values) for key, values in grid.axes.items()}
    if grid.mode == "zip" and len(set(lengths.values())) > 1:
        raise ConfigError(f"grid.axes: zip axes differ in length ({', '.join(f'{k}: {n}' for k, n in lengths.items())})")
    points = list(zip(*grid.axes.values()))
    if grid.mode == "zip" and (i := _repeat(points)) is not None:
        first = points.index(points[i])
        raise ConfigError(f"grid.axes: zip point {i + 1} repeats point {first + 1} "
                          f"({describe_point(dict(zip(grid.axes, points[i])))}): it would run twice")


def _check_branches(spec: SweepSpec, points: list[dict[str, Any]]) -> None:
    """Each grid point's trunk can give every branch: a wsd schedule still stable before each branch step, a
    checkpoint kept there."""
    b = spec.branches
    if not spec.is_grid:
        raise ConfigError("branches: need a grid (grid.axes); a search's trials have no trunks")
    if not b.at or not all(isinstance(s, int) and s > 0 for s in b.at):
        raise ConfigError(f"branches.at: must be a non-empty list of positive step counts, got {b.at!r}")
    if (i := _repeat(b.at)) is not None:
        raise ConfigError(f"branches.at: step {b.at[i]} is listed twice (its branch would run twice)")
    if b.decay_steps <= 0:
        raise ConfigError(f"branches.decay_steps: must be positive, got {b.decay_steps}")
    from scaling.plan.cost import with_budget_steps  # builds the model on the meta device: only where needed

    for point in points:
        trunk = spec.trial_config(point, spec.run_dir(0))
        where = f"branches ({describe_point(point)})" if point else "branches"
        if trunk.optim.schedule != "wsd":
            raise ConfigError(f"{where}: the trunk needs optim.schedule = \"wsd\" (a stable phase to branch from), "
                              f"got {trunk.optim.schedule!r}")
        trunk = with_budget_steps(trunk)
        for at in b.at:
            if at % trunk.train.ckpt_every or (trunk.train.milestone_every and at % trunk.train.milestone_every):
                raise ConfigError(f"{where}: step {at} is not a kept checkpoint of the trunk (train.ckpt_every = "
                                  f"{trunk.train.ckpt_every}, train.milestone_every = {trunk.train.milestone_every})")
            if at >= trunk.train.steps:
                raise ConfigError(f"{where}: step {at} is not below the trunk's {trunk.train.steps} steps")
            moved = lr_departure(trunk, spec.trial_config(point, spec.run_dir(1), branch=(spec.run_dir(0), at)), at)
            if moved is not None:
                raise ConfigError(f"{where}: at step {at} the trunk is no longer in its stable phase (its learning "
                                  f"rate at step {moved} is not the branch's)")


def describe_point(point: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in point.items())


def _repeat(values: list) -> int | None:
    """The index of the first value equal to an earlier one (1 and 1.0 are one value, as TOML's are one setting)."""
    seen: set = set()
    for i, value in enumerate(values):
        if value in seen:
            return i
        seen.add(value)
    return None


def _check_search(search: Search) -> None:
    if search.n_trials <= 0:
        raise ConfigError(f"search.n_trials: must be positive, got {search.n_trials}")
    for key, dist in search.space.items():
        check_key(key, "search.space.")
        where = f"search.space.{key}"
        if dist.type == "categorical":
            if not dist.choices:
                raise ConfigError(f"{where}.choices: must be a non-empty list")
            continue
        _check_choice(f"{where}.type", dist.type, ("float", "int", "categorical"))
        if dist.low is None or dist.high is None:
            raise ConfigError(f"{where}: {dist.type} needs low and high")
        if dist.low >= dist.high:
            raise ConfigError(f"{where}: low ({dist.low:g}) must be below high ({dist.high:g})")
        if dist.log and dist.low <= 0:
            raise ConfigError(f"{where}: log needs low > 0, got {dist.low:g}")
        if dist.log and dist.step is not None:
            raise ConfigError(f"{where}: log and step cannot be combined")
    for point in search.enqueue:
        for key in point:
            if key not in search.space:
                raise ConfigError(f"search.enqueue: {key!r} is not in search.space")


def space_corners(space: dict[str, Distribution]) -> list[dict[str, Any]]:
    """Every bound and choice of each key (the others at their first value): what trials' configs can hold."""
    def values(d: Distribution) -> list[Any]:
        if d.type == "categorical":
            return list(d.choices)
        return [int(d.low), int(d.high)] if d.type == "int" else [float(d.low), float(d.high)]

    first = {key: values(d)[0] for key, d in space.items()}
    return [first | {key: v} for key, d in space.items() for v in values(d)]


def sweep_params(spec: SweepSpec) -> dict[str, Any]:
    """The sweep's definition as flat MLflow params of its parent run."""
    return {f"sweep.{k}": v for k, v in flatten(config_to_dict(spec)).items()}
