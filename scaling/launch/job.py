"""The callable that submitit runs on the cluster; checkpointable, so USR2 requeues it."""

from __future__ import annotations

from typing import Any

import submitit


class TrainJob(submitit.helpers.Checkpointable):
    """Train from a resolved config dict, then (``probe``) AR-probe the result in the same job, where no
    dependent job can follow it (the local executor). A requeued job re-runs the same call, which resumes."""

    def __call__(self, config: dict[str, Any], probe: bool = False) -> dict[str, Any]:
        from scaling.config.loader import from_dict
        from scaling.config.schema import Config
        from scaling.train.trainer import train

        result = train(from_dict(Config, config))
        out = {"run_dir": str(result.run_dir), "run_id": result.run_id, "step": result.step, "val": result.val}
        if probe:
            out["probe"] = ProbeJob()(str(result.run_dir))["probe"]
        return out

    def checkpoint(self, config: dict[str, Any], probe: bool = False) -> submitit.helpers.DelayedSubmission:
        # The trainer has already saved a checkpoint when this runs (see scaling.train.preemption).
        return submitit.helpers.DelayedSubmission(self, config, probe)


class ProbeJob(submitit.helpers.Checkpointable):
    """``scaling probe RUN`` as a job: preempted, requeued and resumed like training."""

    def __call__(self, run_dir: str) -> dict[str, Any]:
        from pathlib import Path

        from scaling.probe.run import run_probe

        return {"run_dir": run_dir, "probe": run_probe(Path(run_dir), [])}

    def checkpoint(self, run_dir: str) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, run_dir)
