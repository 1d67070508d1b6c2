"""The callable that submitit runs on the cluster; checkpointable, so USR2 requeues it."""

from __future__ import annotations

from typing import Any

import submitit


class TrainJob(submitit.helpers.Checkpointable):
    """Train from a resolved config dict. A requeued job re-runs the same call, which resumes."""

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        from scaling.config.loader import from_dict
        from scaling.config.schema import Config
        from scaling.train.trainer import train

        result = train(from_dict(Config, config))
        return {"run_dir": str(result.run_dir), "run_id": result.run_id, "step": result.step, "val": result.val}

    def checkpoint(self, config: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        # The trainer has already saved a checkpoint when this runs (see scaling.train.preemption).
        return submitit.helpers.DelayedSubmission(self, config)
