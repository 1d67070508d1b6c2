"""A job's life as JSON lines in its directory's events log (``JobDir.events``: a run's, or its probe's):
starts, first steps, preemptions, the end.

Written by the trainer (rank 0), read by ``scaling status``: restarts, and the time from a preemption
to the first resumed step, come from here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from scaling.core.run_dir import JobDir


def job_id() -> str:
    """This process's job as the launcher recorded it: Slurm's id (``ARRAY_TASK`` for an array task, as
    submitit names it), the local executor's, or '' outside a job."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or ""


def record(run_dir: Path, event: str, **fields: Any) -> None:
    """Append ``event`` to the log of ``run_dir`` (a run directory or its probe directory)."""
    line = json.dumps({"event": event, "time": time.time(), "job": job_id(), **fields})
    with open(JobDir(run_dir).events, "a") as f:
        f.write(line + "\n")


def read(run_dir: Path) -> list[dict[str, Any]]:
    path = JobDir(run_dir).events
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last(run_dir: Path) -> str:
    """The newest event's name ('' for none): finished, pruned, cancelled, preempted, start, ..."""
    history = read(run_dir)
    return history[-1]["event"] if history else ""
