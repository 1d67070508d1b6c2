"""The callable that submitit runs on the cluster; checkpointable, so USR2 requeues it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import submitit

from scaling.train import events


class TrainJob(submitit.helpers.Checkpointable):
    """Train from a resolved config dict, then (``probe``) AR-probe the result in the same job, where no
    dependent job can follow it (the local executor). A requeued job re-runs the same call, which resumes.
    ``on_validation`` (picklable; a sweep's pruning reporter) may stop the training early: no probe then."""

    def __init__(self, on_validation: Any = None) -> None:
        self.on_validation = on_validation

    def __call__(self, config: dict[str, Any], probe: bool = False) -> dict[str, Any]:
        from scaling.config.loader import from_dict
        from scaling.config.schema import Config
        from scaling.train.trainer import train

        result = train(from_dict(Config, config), self.on_validation)
        out = {"run_dir": str(result.run_dir), "run_id": result.run_id, "step": result.step, "val": result.val,
               "pruned": result.pruned}
        if probe and not result.pruned:
            out["probe"] = ProbeJob()(str(result.run_dir))["probe"]
        return out

    def checkpoint(self, config: dict[str, Any], probe: bool = False) -> submitit.helpers.DelayedSubmission:
        # The trainer has already saved a checkpoint when this runs (see scaling.train.preemption).
        return submitit.helpers.DelayedSubmission(self, config, probe)


class ProbeJob(submitit.helpers.Checkpointable):
    """``scaling probe RUN`` as a job: preempted, requeued and resumed like training."""

    def __call__(self, run_dir: str) -> dict[str, Any]:
        from scaling.probe.run import run_probe

        if events.last(Path(run_dir)) == "pruned":  # a dependent (afterok) probe job follows a pruned training too
            return {"run_dir": run_dir, "probe": {}, "pruned": True}
        return {"run_dir": run_dir, "probe": run_probe(Path(run_dir), [])}

    def checkpoint(self, run_dir: str) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, run_dir)
