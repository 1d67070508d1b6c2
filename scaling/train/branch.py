"""Cooldown branches: a run that starts from another run's checkpoint, taken in the stable phase of a
warm-up/stable/decay schedule, and decays on its own. One long run per size (the trunk) then gives several data
budgets, each at the cost of its decay alone. The branch starts from the trunk's state exactly (weights, EMA,
optimisers, schedulers, data position, RNG), so on CPU it ends bitwise where the same schedule run straight
through does; once it has saved a checkpoint of its own it resumes and requeues like any run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import Config
from scaling.core.errors import UserError
from scaling.core.run_dir import RunDir, first_change, load_run_config
from scaling.models.factory import check_config
from scaling.optim.schedule import lr_multiplier

# What a branch may set apart from its trunk besides what a resume may change (``core.run_dir.first_change``):
# where it ends and how it decays.
BRANCH_CHANGES = ("train.run_dir", "train.steps", "train.flops_budget", "train.branch_from", "train.branch_step",
                  "train.val_every", "train.ckpt_every", "train.keep_last", "train.milestone_every",
                  "optim.decay_steps", "optim.decay_fraction", "tracking.run_name")


def trunk_checkpoints(cfg: Config) -> CheckpointStore:
    return CheckpointStore(RunDir(Path(cfg.train.branch_from)).checkpoints)


def check_branch(cfg: Config) -> None:
    """Read-only: the trunk is a run, holds a checkpoint at the branch step, was trained with this config (but for
    ``BRANCH_CHANGES``), and its learning rate agreed with the branch's at every step before the branch step."""
    trunk, at = RunDir(Path(cfg.train.branch_from)), cfg.train.branch_step
    if not trunk.config.is_file():
        raise UserError(f"train.branch_from: {trunk.root} holds no scaling run")
    if at >= cfg.train.steps:
        raise UserError(f"train.branch_step: {at} must be below train.steps {cfg.train.steps}")
    saved = trunk_checkpoints(cfg).steps()
    if at not in saved:
        raise UserError(f"train.branch_step: the trunk {trunk.root} has no checkpoint at step {at} (it has "
                        f"{', '.join(map(str, saved)) or 'none'}; keep one with its train.milestone_every)")
    changed = first_change(trunk.config, cfg, also=BRANCH_CHANGES)
    if changed:
        key, old, new = changed
        raise UserError(f"train.branch_from: the trunk {trunk.root} was trained with {key} = {old!r}, not {new!r}; "
                        "a branch changes only where and how it decays")
    moved = lr_departure(check_config(load_run_config(trunk.root, [], ())), cfg, at)
    if moved is not None:
        raise UserError(f"train.branch_step: the trunk's learning rate at step {moved} is not the branch's; branch "
                        f"at a step where the trunk is still in its stable phase (optim.schedule = \"wsd\")")


def lr_departure(trunk: Config, branch: Config, at: int) -> int | None:
    """The first step before ``at`` where the branch's learning rate is not the trunk's; None if they agree."""
    theirs, ours = lr_multiplier(trunk.optim, trunk.train.steps), lr_multiplier(branch.optim, branch.train.steps)
    return next((s for s in range(at) if theirs(s) != ours(s)), None)


def with_trunk_parent(cfg: Config) -> Config:
    """A branch's MLflow run is a child of its trunk's (unless the config names another parent)."""
    if not cfg.train.branch_from or cfg.tracking.parent_run_id:
        return cfg
    parent = RunDir(Path(cfg.train.branch_from)).run_id()
    return replace(cfg, tracking=replace(cfg.tracking, parent_run_id=parent)) if parent else cfg
