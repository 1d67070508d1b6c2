"""Launching through submitit, on the real single-node Slurm dev cluster and on the local executor.

The dev cluster is started by ``slurm/devcluster.sh up`` (Debian packages, root); where it cannot
start, the Slurm cases are skipped with the script's reason and the local cases still run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scaling.cli import main
from scaling.models.factory import load_config
from scaling.launch.profile import load_profile
from scaling.core.errors import UserError
from scaling.launch import status as launch_status
from scaling.launch.status import UNKNOWN, cancel, job_state, run_state, status
from scaling.launch.submit import record_job, submit
from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from tests.helpers import REPO, assert_bitwise_equal, final_state, run_cli, tiny_args

STEPS = 60
ARGS = {"train.steps": STEPS, "train.batch_size": 16, "train.ckpt_every": 1000, "train.log_every": 5,
        "train.val_every": 1000, "optim.warmup_steps": 5}


def profile_file(profile: str) -> Path:
    """The dev cluster's shipped profile; the local executor's at one CPU a job (``profiles/local.toml``)."""
    return Path(__file__).parent / "profiles" / "local.toml" if profile == "local" else REPO / "slurm" / f"{profile}.toml"


def _config(data: Path, run_dir: Path, uri: str):
    return load_config("tiny", tiny_args(data, run_dir, uri, **ARGS))


def _history_steps(uri: str, key: str) -> list[int]:
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id])
    return [m.step for m in client.get_metric_history(run.info.run_id, key)]


def _status(uri: str) -> str:
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id])
    return run.info.status


def _wait_for_training(run_dir: Path, job, timeout: float = 300) -> None:
    """Until the job is past its start-up and training (its MLflow run may still be on its way: the tracker sends
    from a thread of its own), then 3 s more."""
    deadline = time.monotonic() + timeout
    while not any(e["event"] == "first_step" for e in events.read(run_dir)):
        assert not job.done(), job.stderr()
        assert time.monotonic() < deadline, "job did not start training"
        time.sleep(0.5)
    time.sleep(3)


def _task_pids(job, profile: str) -> list[int]:
    """The job's training processes on this node: its job steps' (Slurm), the local controller's children."""
    if profile == "dev":
        out = subprocess.run(["scontrol", "listpids", str(job.job_id)], capture_output=True, text=True).stdout
        rows = [line.split() for line in out.splitlines()[1:]]  # PID JOBID STEPID LOCALID GLOBALID
        return [int(row[0]) for row in rows if row[2] not in ("batch", "extern")]
    out = subprocess.run(["pgrep", "-P", str(job._process.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def _preempt(job, profile: str) -> None:
    if profile == "dev":
        subprocess.run(["scancel", "--signal=USR2", str(job.job_id)], check=True)
    else:
        for pid in _task_pids(job, profile):
            os.kill(pid, signal.SIGUSR2)


class _RequeueHold:
    """Polls a Slurm job's state (``squeue``: state and reason) and releases the hold Slurm puts on a requeued job
    (BeginTime, ~100 s), which a dev cluster has no reason to wait out, but only 2 s into it: the requeue revoked the
    job's credential, and a job started again within the same second is refused by slurmd and ended by slurmctld
    ("Killing non-startable batch JobId=...: Job credential revoked"; seen once in CI, on the poll right after the
    requeue)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.since: float | None = None

    def poll(self) -> str:
        out = subprocess.run(["squeue", "-h", "-j", self.job_id, "-o", "%T %r"], capture_output=True,
                             text=True).stdout.strip()
        if not (out.startswith("PENDING") and "BeginTime" in out):
            self.since = None
        elif self.since is None:
            self.since = time.monotonic()
        elif time.monotonic() - self.since >= 2:
            subprocess.run(["scontrol", "update", f"JobId={self.job_id}", "StartTime=now"], check=True)
            self.since = None
        return out


def _scheduler_state(job_id: str) -> str:
    """What slurmctld still knows of a job that ``squeue`` no longer lists (an ended job, for MinJobAge)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    return " ".join(f"{k}={fields[k]}" for k in ("JobState", "Reason", "ExitCode", "Restarts") if k in fields) \
        or out.stderr.strip()


_ENDED = {f"JobState={s}" for s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")}


def _result(job, profile: str, timeout: float = 600) -> dict:
    """The job's result after any requeues (each task's for a job of several), releasing Slurm's requeue holds
    (``_RequeueHold``). A job not done in ``timeout`` fails the test with its scheduler state and the end of its
    tasks' logs; one that Slurm ended without a result fails it at once."""
    deadline = time.monotonic() + timeout
    hold = _RequeueHold(str(job.job_id))
    ended_at = None
    while not job.done():
        out = hold.poll() if profile == "dev" else ""
        state = (out or _scheduler_state(str(job.job_id))) if profile == "dev" else job.state
        if profile == "dev" and not out and state.split(" ")[0] in _ENDED:
            ended_at = ended_at or time.monotonic()  # its result file may be a moment behind
        if time.monotonic() >= deadline or (ended_at and time.monotonic() - ended_at > 10):
            why = "ended without a result" if ended_at else f"not done in {timeout:.0f} s"
            pytest.fail(f"job {job.job_id} {why}: {state}\n" + "\n".join(
                f"task {i}: {(job.task(i).stderr() or '')[-1500:]}" for i in range(job.num_tasks)))
        time.sleep(0.5)
    return job.results() if job.num_tasks > 1 else job.result()


def _wait_for_state(run_dir: Path, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while status(run_dir).state != state:
        assert time.monotonic() < deadline, status(run_dir)
        time.sleep(0.5)


def _trace_and_slow_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, delay_s: float = 0) -> Path:
    """Jobs submitted from here on (submitit passes our environment on) trace their samples and sleep
    ``delay_s`` before each step."""
    trace = tmp_path / "trace"
    monkeypatch.setenv("SCALING_SAMPLE_TRACE", str(trace))
    monkeypatch.setenv("SCALING_STEP_DELAY_S", str(delay_s))
    return Path(f"{trace}.rank0")


def _traced_steps(trace: Path) -> list[int]:
    """The steps rank 0 began, in order, over all the run's jobs (a resume goes back to its checkpoint)."""
    return [json.loads(line)[0] for line in trace.read_text().splitlines()]


def _steps_redone(trace: Path) -> int:
    """Steps trained twice: those begun after the last checkpoint before a stop. No step may be skipped."""
    steps = _traced_steps(trace)
    assert sorted(set(steps)) == list(range(STEPS))
    return len(steps) - STEPS


def _requeue_to_first_step(history: list[dict], stop: str) -> list[float]:
    """Seconds from each ``stop`` event to the next first step (requeue, start-up, one step)."""
    return [history[i + 2]["time"] - e["time"] for i, e in enumerate(history) if e["event"] == stop]


def _assert_reference_run(reference: dict, run_dir: Path, uri: str) -> None:
    """The run ended bitwise where an uninterrupted one does, as one FINISHED MLflow run with every point once."""
    state = final_state(run_dir, STEPS)
    for key in ("model", "opt_g", "sched_g"):
        assert_bitwise_equal(reference[key], state[key], key)
    assert _history_steps(uri, "train/loss") == list(range(5, STEPS + 1, 5))
    assert _status(uri) == "FINISHED"


@pytest.fixture(scope="module")
def references(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict]:
    """An uninterrupted run's final state, trained with as many torch threads as a profile's jobs get (its
    cpus_per_task): another thread count sums floats in another order, and the comparisons are bitwise."""
    cache: dict[int, dict] = {}

    def get(profile: str) -> dict:
        cpus = load_profile(profile_file(profile)).cpus_per_task
        if cpus not in cache:
            tmp = tmp_path_factory.mktemp(f"ref-{cpus}cpu")
            proc = run_cli("train", "tiny", *tiny_args(synth_data, tmp / "run", f"sqlite:///{tmp / 'm.db'}", **ARGS),
                           env={"OMP_NUM_THREADS": str(cpus)})
            assert proc.returncode == 0, proc.stderr[-2000:]
            cache[cpus] = final_state(tmp / "run", STEPS)
        return cache[cpus]

    return get


@pytest.fixture
def reference(profile: str, references: Callable[[str], dict]) -> dict:
    return references(profile)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["dev"], indirect=True)  # the local executor's USR2 is its time limit's, below
def test_launched_job_trains_and_records_a_complete_run_through_a_usr2_requeue(
        profile: str, reference: dict, synth_data: Path, tmp_path: Path, mlflow_uri: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A launched job trains to the end and records one complete run (every logged point once, FINISHED, its one
    job in jobs.jsonl) even when USR2 preempts it: it saves, requeues and resumes bitwise where it stopped."""
    trace = _trace_and_slow_steps(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    job = submit(_config(synth_data, run_dir, mlflow_uri), load_profile(profile_file(profile)), profile)
    _wait_for_training(run_dir, job)
    _preempt(job, profile)
    result = _result(job, profile)
    assert result["step"] == STEPS
    saved = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*"))
    assert len(saved) == 2 and 0 < saved[0] < STEPS  # the preemption checkpoint, then the final one
    _assert_reference_run(reference, run_dir, mlflow_uri)
    history = events.read(run_dir)
    assert [e["event"] for e in history] == ["start", "first_step", "preempted", "start", "first_step", "finished"]
    assert history[3]["step"] == history[2]["step"]  # resumed exactly where it was preempted
    assert _steps_redone(trace) == 0
    jobs = [json.loads(line) for line in (run_dir / "jobs.jsonl").read_text().splitlines()]
    assert [j["job_id"] for j in jobs] == [str(job.job_id)]  # requeued: still the one job submitted
    (seconds,) = _requeue_to_first_step(history, "preempted")
    print(f"[{profile}] USR2 preemption: requeue to first resumed step {seconds:.1f} s, steps redone 0")
    _wait_for_state(run_dir, "FINISHED")  # the result comes just before the job's end
    assert status(run_dir).restarts == 1


# On Slurm a one-minute limit, its least. slurmctld checks time limits every 30 s (PERIODIC_TIMEOUT) and sends the
# --signal up to one check early, so with signal_delay_s = 1 the USR2 comes 29-59 s into a job, before the
# check (60-90 s in) that would kill it. The local executor takes fractions of a minute and signals on time: 30 s
# in, leaving 15 s to checkpoint and exit. Slowed steps make the tiny run outlast its first job even on an idle
# machine; on a loaded one a requeued job may time out again.
TIME_LIMIT = {"local": {"time_min": 0.75, "signal_delay_s": 15, "step_delay_s": 0.5},
              "dev": {"time_min": 1, "signal_delay_s": 1, "step_delay_s": 1.0}}


@pytest.mark.slow
def test_time_limit_checkpoints_requeues_and_finishes_bitwise(profile: str, reference: dict, synth_data: Path,
                                                               tmp_path: Path, mlflow_uri: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    limit = TIME_LIMIT[profile]
    trace = _trace_and_slow_steps(monkeypatch, tmp_path, limit["step_delay_s"])
    cluster = replace(load_profile(profile_file(profile)), time_min=limit["time_min"],
                      signal_delay_s=limit["signal_delay_s"], max_requeues=10)  # how many depends on load
    assert not cluster.validate()
    run_dir = tmp_path / "run"
    job = submit(_config(synth_data, run_dir, mlflow_uri), cluster, profile)
    assert _result(job, profile)["step"] == STEPS
    _assert_reference_run(reference, run_dir, mlflow_uri)
    history = events.read(run_dir)
    names = [e["event"] for e in history]
    timeouts = [i for i, name in enumerate(names) if name == "timed_out"]
    assert timeouts and names[-1] == "finished" and len(names) == 3 * len(timeouts) + 3, names
    for i in timeouts:  # each time-out saved a checkpoint and the requeued job resumed from it
        assert names[i - 2:i + 3] == ["start", "first_step", "timed_out", "start", "first_step"], names
        assert history[i + 1]["step"] == history[i]["step"]
    assert len({e["job"] for e in history}) == 1  # requeued, not resubmitted
    assert _steps_redone(trace) == 0
    seconds = ", ".join(f"{s:.1f}" for s in _requeue_to_first_step(history, "timed_out"))
    print(f"[{profile}] time limit: {len(timeouts)} time-out(s), requeue to first resumed step {seconds} s, "
          "steps redone 0")
    _wait_for_state(run_dir, "FINISHED")
    assert (status(run_dir).step, status(run_dir).restarts) == (STEPS, len(timeouts))


CKPT_EVERY = 10


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["local"], indirect=True)  # resuming is the trainer's, whatever the executor
def test_sigkilled_job_resumes_from_its_last_checkpoint_when_relaunched(profile: str, reference: dict,
                                                                       synth_data: Path, tmp_path: Path,
                                                                       mlflow_uri: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    trace = _trace_and_slow_steps(monkeypatch, tmp_path, 0.2)
    run_dir = tmp_path / "run"
    args = tiny_args(synth_data, run_dir, mlflow_uri, **(ARGS | {"train.ckpt_every": CKPT_EVERY}))
    path = profile_file(profile)
    job = submit(load_config("tiny", args), load_profile(path), profile)
    deadline = time.monotonic() + 300
    while not (trace.is_file() and trace.read_text().count("\n") > 2.5 * CKPT_EVERY):  # between checkpoints
        assert not job.done() and time.monotonic() < deadline, "job did not train"
        time.sleep(0.05)
    for pid in _task_pids(job, profile):  # the node loses the job: no signal, no checkpoint, no requeue
        os.kill(pid, signal.SIGKILL)
    _wait_for_state(run_dir, "FAILED")
    saved = CheckpointStore(run_dir / "checkpoints").latest()
    killed_at = _traced_steps(trace)[-1] + 1  # steps begun
    assert main(["launch", "tiny", "--profile", str(path), "--wait", *args]) == 0  # the same command again
    _assert_reference_run(reference, run_dir, mlflow_uri)
    history = events.read(run_dir)
    assert [e["event"] for e in history] == ["start", "first_step", "start", "first_step", "finished"]
    assert history[2]["step"] == saved and 0 < saved < killed_at
    redone = _steps_redone(trace)
    assert redone == killed_at - saved
    print(f"[{profile}] SIGKILL at step {killed_at}: resumed from checkpoint {saved}, steps redone {redone}")
    _wait_for_state(run_dir, "FINISHED")
    assert (status(run_dir).step, status(run_dir).restarts) == (STEPS, 1)
    assert len((run_dir / "jobs.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_cancel_checkpoints_and_stops_without_requeue(profile: str, synth_data: Path, tmp_path: Path,
                                                      mlflow_uri: str) -> None:
    run_dir = tmp_path / "run"
    job = submit(_config(synth_data, run_dir, mlflow_uri), load_profile(profile_file(profile)), profile)
    _wait_for_training(run_dir, job)
    assert status(run_dir).state == "RUNNING"
    assert cancel(run_dir).startswith("sent TERM")
    _wait_for_state(run_dir, "CANCELLED")
    saved = CheckpointStore(run_dir / "checkpoints").latest()
    assert saved is not None and 0 < saved < STEPS
    assert [e["event"] for e in events.read(run_dir)][-1] == "cancelled"
    time.sleep(3)
    assert status(run_dir).state == "CANCELLED"  # not requeued
    assert cancel(run_dir) == "not running"


@pytest.mark.slow
def test_scontrol_requeue_resumes_and_ends_bitwise(dev_cluster: None, references: Callable[[str], dict],
                                                   synth_data: Path, tmp_path: Path, mlflow_uri: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An administrator's (or a preempting scheduler's) ``scontrol requeue``: Slurm TERMs the job, the trainer
    checkpoints and stops, Slurm starts it again, and it resumes from that checkpoint to the same weights."""
    trace = _trace_and_slow_steps(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    job = submit(_config(synth_data, run_dir, mlflow_uri), load_profile(REPO / "slurm" / "dev.toml"), "dev")
    _wait_for_training(run_dir, job)
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True)
    deadline = time.monotonic() + 600
    hold = _RequeueHold(str(job.job_id))
    while events.last(run_dir) != "finished":  # the first job's TERM result does not end the run
        out = hold.poll()
        assert time.monotonic() < deadline, (out or _scheduler_state(str(job.job_id)), events.read(run_dir))
        time.sleep(0.5)
    history = events.read(run_dir)
    assert [e["event"] for e in history] == ["start", "first_step", "cancelled", "start", "first_step", "finished"]
    assert history[3]["step"] == history[2]["step"] > 0  # resumed from the checkpoint the TERM wrote
    _wait_for_state(run_dir, "FINISHED")
    _assert_reference_run(references("dev"), run_dir, mlflow_uri)
    redone = _steps_redone(trace)
    (seconds,) = _requeue_to_first_step(history, "cancelled")
    print(f"[dev] scontrol requeue: requeue to first resumed step {seconds:.1f} s, steps redone {redone}")
    assert redone == 0


def test_dev_cluster_node_has_every_core(dev_cluster: None) -> None:
    """Under the suite OMP_NUM_THREADS is 1, which ``nproc`` honours: a node configured from it had one CPU, and
    a job of two tasks pended until the test timed out."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True, check=True).stdout
    assert int(out.split()[0]) == len(os.sched_getaffinity(0))


def test_bad_profile_fails_at_submit_and_queues_nothing(synth_data: Path, tmp_path: Path, mlflow_uri: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('executor = "slurm"\npartiton = "gpu"\n')
    args = ["launch", "tiny", "--profile", str(bad), *tiny_args(synth_data, tmp_path / "run", mlflow_uri)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"scaling: error: profile {bad}: partiton: unknown key (did you mean 'partition'?)"
    assert not (tmp_path / "run").exists()
    missing = ["launch", "tiny", "--profile", str(REPO / "slurm" / "local.toml"),
               *tiny_args(synth_data, tmp_path / "run", mlflow_uri),
               "--loss.perceptual_weight", "1", "--loss.vgg_weights", '"/no/vgg.pth"']
    assert main(missing) == 2
    assert "loss.vgg_weights: weight file /no/vgg.pth not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_run_that_does_not_fit_the_gpus_fails_at_submit(synth_data: Path, tmp_path: Path, mlflow_uri: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    small = tmp_path / "small-gpus.toml"
    small.write_text('executor = "local"\ngpus_per_node = 2\ngpu_mem_gb = 4\n')
    base = ["launch", "tiny", "--profile", str(small), *tiny_args(synth_data, tmp_path / "run", mlflow_uri)]
    # 2 GPUs of 4 GiB, a 256x256 tiny tokenizer at 4096 images per GPU and step: the planner says no.
    too_big = [*base, "--data.image_size", "256", "--train.batch_size", "8192"]
    assert main(too_big) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scaling: error: profile gpu_mem_gb: the run needs about") and "fits" in err, err
    assert "\n" not in err and not (tmp_path / "run").exists()
    # With micro-batches the planner's own suggestion fits, the same check passes (then the job would queue).
    from scaling.models.factory import load_config
    from scaling.launch.profile import load_profile
    from scaling.launch.submit import check_gpu_fit

    suggested = int(err.split("parallel.micro_batch_size ")[1].split()[0])
    cfg = load_config("tiny", [*too_big[4:], "--parallel.micro_batch_size", str(_largest_divisor(4096, suggested))])
    check_gpu_fit(cfg, load_profile(small))


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if n % d == 0)


@pytest.mark.slow
def test_two_task_job_trains_as_two_ranks(profile: str, synth_data: Path, tmp_path: Path, mlflow_uri: str) -> None:
    """One task per GPU on a cluster; here two CPU tasks of one job form a gloo world of two."""
    two = tmp_path / "two-tasks.toml"
    two.write_text(profile_file(profile).read_text() + "\ntasks_per_node = 2\n")
    run_dir = tmp_path / "run"
    cfg = load_config("tiny", tiny_args(synth_data, run_dir, mlflow_uri, **(ARGS | {"train.steps": 10})))
    job = submit(cfg, load_profile(two), profile)
    results = _result(job, profile)
    assert len(results) == 2 and results[0]["step"] == 10 and results[0]["run_id"] and results[1]["run_id"] is None
    starts = [e for e in events.read(run_dir) if e["event"] == "start"]
    assert [e["world_size"] for e in starts] == [2]  # one run of two ranks, recorded once (by rank 0)
    assert _history_steps(mlflow_uri, "train/loss") == [5, 10]


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["dev"], indirect=True)  # local: chained in one job, as tests/study runs it
def test_with_probe_follows_training_with_the_ar_probe(profile: str, synth_data: Path, tmp_path: Path,
                                                       mlflow_uri: str, random_inception: Path) -> None:
    run_dir = tmp_path / "run"
    probe = {"probe.size": "tiny", "probe.steps": 20, "probe.batch_size": 16, "probe.log_every": 10,
             "probe.ckpt_every": 20, "probe.gfid_samples": 10, "probe.cfg_scales": [1.0],
             "probe.linear_probe_epochs": 1, "eval.num_images": 16, "eval.inception_weights": str(random_inception),
             "eval.stats_cache": str(tmp_path / "fid")}
    quick = ARGS | {"train.batch_size": 8}  # what is trained does not matter here, only that the probe follows it
    cfg = load_config("tiny", tiny_args(synth_data, run_dir, mlflow_uri, **(quick | probe)))
    job = submit(cfg, load_profile(profile_file(profile)), profile, with_probe=True)
    result = _result(job, profile)
    assert {"probe/ar_val_loss", "probe/gfid", "probe/linear_acc"} <= set(result["probe"])
    jobs = [json.loads(line) for line in (run_dir / "jobs.jsonl").read_text().splitlines()]
    # Slurm: the probe is its own job, queued behind the training (afterok); local: chained in one job.
    assert [j["kind"] for j in jobs] == (["train", "probe"] if profile == "dev" else ["train"])
    trained = next(e for e in events.read(run_dir) if e["event"] == "finished")
    probe_start = next(e for e in events.read(run_dir / "probe") if e["event"] == "start")
    assert probe_start["time"] > trained["time"]
    client = MlflowClient(mlflow_uri)
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert {"val/psnr", "probe/ar_val_loss", "probe/gfid"} <= set(run.data.metrics)
    assert status(run_dir).state == "FINISHED" and status(run_dir).step == STEPS


@pytest.mark.slow
@pytest.mark.xdist_group("tokenizer_run")  # reads conftest's CLI-trained tokenizer
def test_status_shows_a_runs_step_loss_and_training_flops(tokenizer_run: Path, capsys: pytest.CaptureFixture) -> None:
    """A run trained without a launcher: no job, its last step, loss and the FLOPs it logged, which are what
    ``scaling plan`` counts for the whole run."""
    from scaling.core.config import read_config
    from scaling.plan.cost import run_flops

    planned = run_flops(read_config(str(tokenizer_run / "config.toml")))
    row = status(tokenizer_run)
    assert (row.job_id, row.step, row.restarts) == ("-", 200, 0) and row.last_loss > 0
    assert row.flops == pytest.approx(planned, rel=1e-9)
    assert main(["status", str(tokenizer_run)]) == 0
    header, line = capsys.readouterr().out.strip().splitlines()
    assert header.split()[5:7] == ["LOSS", "FLOPS"] and line.split()[6] == f"{planned:.3g}"


def test_a_slurm_profile_takes_whole_minutes(tmp_path: Path) -> None:
    from scaling.core.config import ConfigError

    path = tmp_path / "half.toml"
    path.write_text('executor = "slurm"\ntime_min = 0.5\nsignal_delay_s = 10\n')
    with pytest.raises(ConfigError, match=r"time_min: Slurm counts whole minutes, got 0\.5$"):
        load_profile(path)
    path.write_text('executor = "local"\ntime_min = 0.5\nsignal_delay_s = 10\n')
    assert load_profile(path).time_min == 0.5  # the local executor signals at any second


def test_a_scheduler_that_does_not_answer_is_unknown_never_ended(dev_cluster: None, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The real squeue against a controller that is down (the dev cluster's config, its controller port
    closed): the job's state is UNKNOWN after the retries, the run is not reported FAILED, and cancel sends
    nothing and says why. With the controller back, the same job id (one Slurm has never heard of) is ENDED."""
    conf = tmp_path / "slurm.conf"
    lines = [line for line in Path("/etc/slurm/slurm.conf").read_text().splitlines()
             if not line.startswith(("SlurmctldPort", "MessageTimeout"))]
    conf.write_text("\n".join(lines + ["SlurmctldPort=1", "MessageTimeout=1"]) + "\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record_job(run_dir, "987654", "slurm", "dev")
    job = {"job_id": "987654", "executor": "slurm"}
    monkeypatch.setattr(launch_status, "SQUEUE_RETRY_S", 0.1)
    with monkeypatch.context() as m:
        m.setenv("SLURM_CONF", str(conf))
        assert job_state(job) == UNKNOWN
        unanswered = run_state(run_dir, job)
        with pytest.raises(UserError, match="job 987654: the scheduler does not answer"):
            cancel(run_dir)
    assert unanswered == UNKNOWN
    assert job_state(job) == "ENDED" and run_state(run_dir, job) == "FAILED"


def test_unrecorded_jobs_are_adopted_in_the_order_they_were_queued(tmp_path: Path) -> None:
    """Job 100 was queued after job 99 (the sweep test met this when the dev cluster's ids passed 99: the probe
    job was recorded before its training job, and the run's newest job was the wrong one)."""
    from submitit.core.utils import DelayedSubmission

    from scaling.core.run_dir import RunDir
    from scaling.launch.job import ProbeJob

    folder = RunDir(tmp_path).submitit
    folder.mkdir(parents=True)
    DelayedSubmission(print).dump(folder / "99_submitted.pkl")
    DelayedSubmission(ProbeJob.__new__(ProbeJob)).dump(folder / "100_submitted.pkl")
    jobs = launch_status.unrecorded_jobs(tmp_path, "slurm")
    assert [(j["job_id"], j["kind"]) for j in jobs] == [("99", "train"), ("100", "probe")]
