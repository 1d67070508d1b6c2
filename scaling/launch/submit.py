"""Build a submitit executor from a profile and submit a training job, after every pre-flight check."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from scaling.core.config import Config
from scaling.core.config.loader import config_to_dict
from scaling.core.errors import UserError
from scaling.launch.job import ProbeJob, TrainJob
from scaling.launch.profile import ClusterProfile
from scaling.core.hooks import fault_point
from scaling.train.preflight import preflight
from scaling.core.run_dir import RunDir, claim_run_dir


def make_executor(profile: ClusterProfile, folder: Path) -> submitit.Executor:
    if profile.executor == "slurm" and not _has_slurm():
        raise UserError("profile executor = 'slurm', but no Slurm here (sbatch not found); use slurm/local.toml")
    minutes = profile.time_min if profile.executor == "local" else int(profile.time_min)
    params = dict(timeout_min=minutes, nodes=profile.nodes, tasks_per_node=profile.tasks_per_node,
                  cpus_per_task=profile.cpus_per_task, name="scaling")
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if profile.mem_gb:
        params["mem_gb"] = profile.mem_gb
    if profile.executor == "local":
        # Not through AutoExecutor, which gives the local executor neither the signal delay nor max_requeues.
        local = submitit.LocalExecutor(folder, max_num_timeout=profile.max_requeues)
        local.update_parameters(**params, signal_delay_s=profile.signal_delay_s)
        return local
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=profile.max_requeues)
    slurm = {"partition": profile.partition, "account": profile.account, "qos": profile.qos,
             "constraint": profile.constraint}
    params |= {f"slurm_{k}": v for k, v in slurm.items() if v}
    params |= {"slurm_signal_delay_s": profile.signal_delay_s, "slurm_setup": profile.setup,
               "slurm_additional_parameters": dict(profile.sbatch)}
    if profile.exclusive:
        params["slurm_exclusive"] = True
    executor.update_parameters(**params)
    return executor


def submit(cfg: Config, profile: ClusterProfile, profile_name: str, with_probe: bool = False,
           on_validation: Any = None) -> submitit.Job:
    """Everything that can fail fails here, before anything is queued. ``with_probe``: the AR probe follows the
    training, as a dependent job (afterok) on Slurm, in the same job on the local executor; returns the last job.
    ``on_validation``: the training's per-validation callback, e.g. a sweep's pruning reporter."""
    run_dir = prepare(cfg, profile, with_probe)
    return queue([Prepared(cfg, run_dir, on_validation)], profile, profile_name, with_probe)[0]


@dataclass
class Prepared:
    """A run that passed every pre-flight check and owns its run directory, ready to queue."""

    cfg: Config
    run_dir: Path
    on_validation: Any = None


def prepare(cfg: Config, profile: ClusterProfile, with_probe: bool = False) -> Path:
    """The checks that refuse a run before anything is queued, then the run directory claimed: its path."""
    check_gpu_fit(cfg, profile)  # the config against the profile first: it needs no file
    preflight(cfg)
    if with_probe:
        from scaling.metrics.fid import check_eval

        check_eval(cfg)
    return claim_run_dir(cfg)


def queue(runs: list[Prepared], profile: ClusterProfile, profile_name: str, with_probe: bool = False,
          array_folder: Path | None = None) -> list[submitit.Job]:
    """Queue prepared runs, each's jobs recorded in its job history; returns each run's last job. With
    ``array_folder`` and a Slurm profile that allows arrays (``array_max``), several runs go as job arrays of
    at most ``array_max`` tasks; otherwise one job each, its submitit folder in its run directory."""
    if array_folder is None or profile.executor != "slurm" or profile.array_max < 2 or len(runs) < 2:
        return [_queue_one(run, profile, profile_name, with_probe) for run in runs]
    jobs = []
    for start in range(0, len(runs), profile.array_max):
        chunk = runs[start:start + profile.array_max]
        if len(chunk) == 1:
            jobs.append(_queue_one(chunk[0], profile, profile_name, with_probe))
        else:
            jobs += _queue_array(chunk, profile, profile_name, with_probe, array_folder / f"{start:04d}")
    return jobs


def _queue_one(run: Prepared, profile: ClusterProfile, profile_name: str, with_probe: bool) -> submitit.Job:
    executor = make_executor(profile, RunDir(run.run_dir).submitit)
    chained = with_probe and profile.executor == "local"
    job = executor.submit(TrainJob(run.on_validation, profile.cpus_per_task), config_to_dict(run.cfg), chained)
    record_job(run.run_dir, str(job.job_id), profile.executor, profile_name)
    if with_probe and not chained:
        executor.update_parameters(slurm_additional_parameters={**profile.sbatch, "dependency": f"afterok:{job.job_id}"})
        job = executor.submit(ProbeJob(profile.cpus_per_task), str(run.run_dir))
        record_job(run.run_dir, str(job.job_id), profile.executor, profile_name, kind="probe")
    return job


def _queue_array(runs: list[Prepared], profile: ClusterProfile, profile_name: str, with_probe: bool,
                 folder: Path) -> list[submitit.Job]:
    """One Slurm job array of the runs' trainings (task i is run i), and with ``with_probe`` one of their probes,
    task i waiting on training task i (aftercorr). The array's submitit files are in ``folder``. Each run
    directory gets, before the array is queued, a pointer to its task (``RunDir.array_pointer``), so that a
    driver killed before recording the jobs finds them (``launch.status.unrecorded_jobs``), and after it, links
    to its task's logs."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(runs):
        # What the pointer says until its jobs are recorded: the array folder and this run's task index.
        pointer = RunDir(run.run_dir).array_pointer(f"{folder.parent.name}-{folder.name}")
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(json.dumps({"folder": str(folder.resolve()), "index": i}))
    executor = make_executor(profile, folder)
    executor.update_parameters(slurm_array_parallelism=len(runs))
    with executor.batch():
        jobs = [executor.submit(TrainJob(run.on_validation, profile.cpus_per_task), config_to_dict(run.cfg), False)
                for run in runs]
    probes = []
    if with_probe:
        array_id = str(jobs[0].job_id).split("_")[0]
        executor.update_parameters(slurm_additional_parameters={**profile.sbatch, "dependency": f"aftercorr:{array_id}"})
        with executor.batch():
            probes = [executor.submit(ProbeJob(profile.cpus_per_task), str(run.run_dir)) for run in runs]
    fault_point("array-queued", 0)  # crash tests: the jobs are queued, not yet recorded
    _record_array(runs, jobs, profile, profile_name, "train")
    _record_array(runs, probes, profile, profile_name, "probe")
    for run in runs:
        drop_array_pointers(run.run_dir)
    return probes or jobs


def drop_array_pointers(run_dir: Path) -> None:
    """Once the jobs a run's array pointers lead to are in its job history (queued by this process, or found
    by the next driver), the pointers are spent: nothing more will be queued under them."""
    for pointer in RunDir(run_dir).array_pointers():
        pointer.unlink(missing_ok=True)


def _record_array(runs: list[Prepared], jobs: list[submitit.Job], profile: ClusterProfile, profile_name: str,
                  kind: str) -> None:
    for run, job in zip(runs, jobs):
        record_job(run.run_dir, str(job.job_id), profile.executor, profile_name, kind=kind)
        for log in (job.paths.stdout, job.paths.stderr):  # the task's logs where a single job's would be
            link = RunDir(run.run_dir).submitit / log.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(log)


def check_gpu_fit(cfg: Config, profile: ClusterProfile) -> None:
    """With ``gpu_mem_gb`` in the profile: the memory planner's per-GPU estimate for this config, micro-batch
    and activation checkpointing on all the job's GPUs must fit, or nothing is queued."""
    if not (profile.gpus_per_node and profile.gpu_mem_gb):
        return
    from scaling.plan.count import meta_model
    from scaling.plan.memory import GIB, plan_memory
    from scaling.parallel.batch import batch_split

    gpus = profile.nodes * profile.gpus_per_node
    micro, _ = batch_split(cfg, gpus)
    plan = plan_memory(cfg, meta_model(cfg), gpus, profile.gpu_mem_gb, micro)
    ac = "full" if cfg.parallel.activation_checkpoint == "full" else "none"  # selective: bounded by none
    need = plan.total(ac, micro) / GIB
    if need > profile.gpu_mem_gb:
        fits = plan.suggest(ac)
        hint = f"parallel.micro_batch_size {fits} fits" if fits else "more GPUs are needed"
        if ac == "none" and plan.suggest("full"):
            hint += f"; with parallel.activation_checkpoint full, micro-batch {plan.suggest('full')} fits"
        raise UserError(f"profile gpu_mem_gb: the run needs about {need:.1f} GiB per GPU (micro-batch {micro}, "
                        f"activation checkpointing {ac}, {gpus} GPUs) but a GPU has {profile.gpu_mem_gb:g}; {hint}")


def record_job(run_dir: Path, job_id: str, executor: str, profile: str, kind: str = "train") -> None:
    """Append to the run's job history (a run may span several jobs: requeues, relaunches, its probe)."""
    with open(RunDir(run_dir).jobs, "a") as f:
        f.write(json.dumps({"job_id": job_id, "executor": executor, "profile": profile, "kind": kind,
                            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")


def _has_slurm() -> bool:
    import shutil

    return shutil.which("sbatch") is not None
