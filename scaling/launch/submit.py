"""Build a submitit executor from a profile and submit a training job, after every pre-flight check."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import submitit

from scaling.config import Config
from scaling.config.loader import config_to_dict
from scaling.errors import UserError
from scaling.launch.job import ProbeJob, TrainJob
from scaling.launch.profile import ClusterProfile
from scaling.train.preflight import preflight
from scaling.train.run_dir import claim_run_dir


def make_executor(profile: ClusterProfile, folder: Path) -> submitit.Executor:
    if profile.executor == "slurm" and not _has_slurm():
        raise UserError("profile executor = 'slurm', but no Slurm here (sbatch not found); use slurm/local.toml")
    params = dict(timeout_min=profile.time_min, nodes=profile.nodes, tasks_per_node=profile.tasks_per_node,
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
    preflight(cfg)
    if with_probe:
        from scaling.eval.fid import check_eval

        check_eval(cfg)
    check_gpu_fit(cfg, profile)
    run_dir = claim_run_dir(cfg)
    executor = make_executor(profile, run_dir / "submitit")
    chained = with_probe and profile.executor == "local"
    job = executor.submit(TrainJob(on_validation, profile.cpus_per_task), config_to_dict(cfg), chained)
    record_job(run_dir, str(job.job_id), profile.executor, profile_name)
    if with_probe and not chained:
        executor.update_parameters(slurm_additional_parameters={**profile.sbatch, "dependency": f"afterok:{job.job_id}"})
        job = executor.submit(ProbeJob(profile.cpus_per_task), str(run_dir))
        record_job(run_dir, str(job.job_id), profile.executor, profile_name, kind="probe")
    return job


def check_gpu_fit(cfg: Config, profile: ClusterProfile) -> None:
    """With ``gpu_mem_gb`` in the profile: the memory planner's per-GPU estimate for this config, micro-batch
    and activation checkpointing on all the job's GPUs must fit, or nothing is queued."""
    if not (profile.gpus_per_node and profile.gpu_mem_gb):
        return
    from scaling.plan.count import meta_model
    from scaling.plan.memory import GIB, plan_memory
    from scaling.train.trainer import batch_split

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
    with open(run_dir / "jobs.jsonl", "a") as f:
        f.write(json.dumps({"job_id": job_id, "executor": executor, "profile": profile, "kind": kind,
                            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")


def _has_slurm() -> bool:
    import shutil

    return shutil.which("sbatch") is not None
