"""What the platform's runs are doing: job state, step, last loss, training FLOPs, restarts; and cancelling them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from scaling.core.errors import UserError
from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from scaling.core.run_dir import RunDir

UNKNOWN = "UNKNOWN"  # the scheduler did not answer: the job may be queued, running or ended
SQUEUE_TRIES, SQUEUE_RETRY_S = 3, 5.0  # a controller restarting or briefly overloaded answers within these


@dataclass
class RunStatus:
    run_dir: Path
    job_id: str
    executor: str
    state: str
    step: int | None
    last_loss: float | None
    restarts: int
    mlflow_run: str
    flops: float | None = None  # training FLOPs spent so far (the run's last train/flops)


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories at or below ``paths`` (a run directory holds a saved config)."""
    runs = []
    for path in paths:
        if RunDir(path).config.is_file():
            runs.append(path)
        elif path.is_dir():
            runs += sorted(p.parent for p in path.glob(f"**/{RunDir(path).config.name}"))
    return runs


def read_jobs(run_dir: Path) -> list[dict]:
    """Every job submit queued for the run (training, relaunches, its probe), oldest first."""
    path = RunDir(run_dir).jobs
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def last_job(run_dir: Path, kind: str = "train") -> dict:
    """The newest job of ``kind`` (train, or the AR probe that follows it) in the run's job history."""
    return next((j for j in reversed(read_jobs(run_dir)) if j.get("kind", "train") == kind), {})


def unrecorded_jobs(run_dir: Path, executor: str) -> list[dict]:
    """Jobs submitit queued for the run that are not in its job history (a driver killed between the two): its
    single jobs' pickles in its submitit folder, and its tasks' in the job arrays it points to
    (``RunDir.array_pointers``). The kind (train or probe) is read from the pickled call."""
    from submitit.core.utils import DelayedSubmission

    from scaling.launch.job import ProbeJob

    run = RunDir(run_dir)
    pickles = sorted(run.submitit.glob("*_submitted.pkl"))
    for pointer in run.array_pointers():
        task = json.loads(pointer.read_text())
        pickles += sorted(Path(task["folder"]).glob(f"*_{task['index']}_submitted.pkl"))
    known = {j["job_id"] for j in read_jobs(run_dir)}
    jobs = []
    for pkl in pickles:
        job_id = pkl.name.removesuffix("_submitted.pkl")
        if job_id not in known:
            kind = "probe" if isinstance(DelayedSubmission.load(pkl).function, ProbeJob) else "train"
            jobs.append({"job_id": job_id, "executor": executor, "kind": kind})
    return sorted(jobs, key=lambda j: _id_order(j["job_id"]))  # queued order: job 100 after job 99


def _id_order(job_id: str) -> list[int]:
    """A Slurm job id (``99``, ``100_3``) or a local one (a pid) as numbers, compared as the scheduler counts."""
    return [int(part) for part in re.findall(r"\d+", job_id)]


def slurm_states() -> dict[str, str]:
    """Every queued or running Slurm job's state from one squeue call (a sweep polls hundreds of jobs). A
    scheduler that does not answer is an error, never 'all jobs ended'."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True)  # -r: array tasks one by one
    if out.returncode != 0:
        raise UserError(f"squeue failed: {out.stderr.strip()[:200]}")
    return dict(line.split(maxsplit=1) for line in out.stdout.splitlines() if line.strip())


def job_state(job: dict, slurm: dict[str, str] | None = None) -> str:
    """Scheduler state of the run's newest job; '-' for a run trained without a launcher. ``slurm``: a
    ``slurm_states`` snapshot to read instead of asking squeue; otherwise squeue is asked up to ``SQUEUE_TRIES``
    times, ``SQUEUE_RETRY_S`` apart, and a scheduler that never answers gives ``UNKNOWN``, never 'ended'."""
    if not job:
        return "-"
    if job["executor"] == "slurm" and slurm is not None:
        return slurm.get(job["job_id"], "ENDED")
    if job["executor"] == "slurm":
        return _squeue_job(job["job_id"])
    return "RUNNING" if _alive(int(job["job_id"])) else "ENDED"  # local: the job id is the controller's pid


def _squeue_job(job_id: str) -> str:
    for attempt in range(SQUEUE_TRIES):
        out = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip() or "ENDED"
        if "Invalid job id" in out.stderr:  # a job the controller has forgotten: it ended long ago
            return "ENDED"
        if attempt + 1 < SQUEUE_TRIES:
            time.sleep(SQUEUE_RETRY_S)
    return UNKNOWN


def _alive(pid: int) -> bool:
    """A live process; an exited one its parent has not reaped yet (a zombie) counts as ended."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# Events a trainer records as it stops; an ended job whose log stops elsewhere died without warning.
ENDINGS = ("finished", "cancelled", "preempted", "timed_out", "diverged")


def run_state(run_dir: Path, job: dict) -> str:
    """The scheduler's state while the job is queued or running (UNKNOWN while the scheduler does not answer);
    once it ended, how the run stopped: FINISHED, CANCELLED, PREEMPTED, TIMED_OUT, DIVERGED, or FAILED (killed or
    crashed: relaunching resumes it)."""
    state = job_state(job)
    if state not in ("ENDED", "-"):
        return state
    history = events.read(run_dir)
    last = history[-1]["event"] if history else ""
    if last in ENDINGS:
        return last.upper()
    return "FAILED" if state == "ENDED" else state  # "-": trained without a launcher, it may still be running


def last_metrics(run_dir: Path) -> dict[str, float]:
    """The newest value of every metric of the run's MLflow run; empty if it has none yet or the store does not
    answer."""
    run = RunDir(run_dir)
    run_id = run.run_id()
    if run_id is None:
        return {}
    from scaling.core.config.loader import read_toml

    uri = read_toml(run.config).get("tracking", {}).get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    try:
        from mlflow.tracking import MlflowClient

        return dict(MlflowClient(uri or None).get_run(run_id).data.metrics)
    except Exception:  # status must work while the tracking server is away
        return {}


def status(run_dir: Path) -> RunStatus:
    job = last_job(run_dir)
    starts = sum(1 for e in events.read(run_dir) if e["event"] == "start")
    run = RunDir(run_dir)
    metrics = last_metrics(run_dir)
    return RunStatus(run_dir, job.get("job_id", "-"), job.get("executor", "-"), run_state(run_dir, job),
                     CheckpointStore(run.checkpoints).latest(), metrics.get("train/loss"), max(starts - 1, 0),
                     run.run_id() or "-", metrics.get("train/flops"))


def scancel(job_id: str, *flags: str) -> None:
    """``scancel FLAGS JOB``. A job that ends as the signal reaches it (the trainer checkpoints and exits on TERM
    within a second) makes scancel retry and then fail with "already completing or completed": that is done."""
    out = subprocess.run(["scancel", *flags, job_id], capture_output=True, text=True)
    if out.returncode != 0 and "completing or completed" not in out.stderr:
        raise UserError(f"scancel {job_id}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")


def cancel(run_dir: Path) -> str:
    """Stop a run cleanly: TERM makes the trainer save a checkpoint and exit without requeueing."""
    job = last_job(run_dir)
    state = job_state(job)
    if state == UNKNOWN:
        raise UserError(f"job {job['job_id']}: the scheduler does not answer (squeue failed); nothing was sent, "
                        f"try again")
    if state in ("ENDED", "-"):
        return "not running"
    if job["executor"] == "slurm" and state == "PENDING":  # Slurm signals no pending job; it has nothing to save
        scancel(job["job_id"])
        return f"cancelled queued job {job['job_id']}"
    if job["executor"] == "slurm":
        scancel(job["job_id"], "--signal=TERM")
    else:
        os.kill(int(job["job_id"]), signal.SIGTERM)  # the local controller forwards it to its tasks
    return f"sent TERM to job {job['job_id']}"
