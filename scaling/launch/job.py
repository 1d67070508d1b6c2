"""The callable that submitit runs on the cluster; checkpointable, so USR2 requeues it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import submitit

from scaling.core import events
from scaling.core.run_dir import RunDir


PROBE_IMPORTS = ("scaling.probe.run", "scaling.eval.reconstruction")


class TrainJob(submitit.helpers.Checkpointable):
    """Train from a resolved config dict, then (``probe``) measure the result (``ProbeJob``) in the same job,
    where no dependent job can follow it (the local executor). A requeued job re-runs the same call, which resumes.
    ``on_validation`` (picklable; a sweep's pruning reporter) may stop the training early: no probe then.
    ``cpus``: the task's CPU allotment (the profile's ``cpus_per_task``), which bounds torch's threads."""

    def __init__(self, on_validation: Any = None, cpus: int = 0) -> None:
        self.on_validation = on_validation
        self.cpus = cpus

    def __call__(self, config: dict[str, Any], probe: bool = False) -> dict[str, Any]:
        from scaling.core.config.loader import from_dict
        from scaling.core.config.schema import Config
        from scaling.core.startup import preload
        from scaling.tracking.mlflow_tracker import IMPORTS

        preload("scaling.train.trainer", *IMPORTS, *(PROBE_IMPORTS if probe else ()))
        from scaling.train.trainer import train

        limit_threads(self.cpus)
        result = train(from_dict(Config, config), self.on_validation)
        out = {"run_dir": str(result.run_dir), "run_id": result.run_id, "step": result.step, "val": result.val,
               "pruned": result.pruned}
        if probe and not result.pruned:
            out["probe"] = ProbeJob(self.cpus)(str(result.run_dir))["probe"]
        return out

    def checkpoint(self, config: dict[str, Any], probe: bool = False) -> submitit.helpers.DelayedSubmission:
        # The trainer has already saved a checkpoint when this runs (see scaling.core.signals).
        return submitit.helpers.DelayedSubmission(self, config, probe)


class ProbeJob(submitit.helpers.Checkpointable):
    """A trained tokenizer's measurements as a job: ``scaling probe RUN``, then ``scaling eval RUN`` (on the first
    task; the probe's process group is gone by then), each skipped when done; preempted, requeued and resumed
    like training."""

    def __init__(self, cpus: int = 0) -> None:
        self.cpus = cpus

    def __call__(self, run_dir: str) -> dict[str, Any]:
        from scaling.core.startup import preload
        from scaling.tracking.mlflow_tracker import IMPORTS

        preload(*PROBE_IMPORTS, *IMPORTS)
        from scaling.eval.reconstruction import evaluate_once
        from scaling.probe.run import run_probe

        limit_threads(self.cpus)
        if events.last(Path(run_dir)) == "pruned":  # a dependent (afterok) probe job follows a pruned training too
            return {"run_dir": run_dir, "probe": {}, "pruned": True}
        out = {"run_dir": run_dir, "probe": run_probe(Path(run_dir), [])}
        if int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0"))) == 0:
            out["eval"] = evaluate_once(Path(run_dir))
        return out

    def checkpoint(self, run_dir: str) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, run_dir)


def limit_threads(cpus: int) -> None:
    """torch's intra-op threads to the task's CPUs (``cpus``, else Slurm's ``SLURM_CPUS_PER_TASK``): by default
    torch takes every core of the machine, and jobs sharing one (a sweep's concurrent trials, a shared node)
    then oversubscribe it, which made tiny trials 10x slower."""
    cpus = cpus or int(os.environ.get("SLURM_CPUS_PER_TASK", "0"))
    if cpus > 0:
        import torch

        torch.set_num_threads(cpus)


def measured(run_dir: Path) -> bool:
    """All of ``ProbeJob``'s results are on disk: each probe kind's and the evaluation's."""
    from scaling.core.config.schema import probe_kinds
    from scaling.core.run_dir import load_run_config

    run = RunDir(run_dir)
    kinds = probe_kinds(load_run_config(run_dir, [], ()))
    return all(run.probe_dir(kind).results.is_file() for kind in kinds) and bool(run.evaluations())
