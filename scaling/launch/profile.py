"""Cluster profiles (``slurm/*.toml``): where and how jobs run. ``executor = "local"`` needs no Slurm."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scaling.core.config.loader import ConfigError, from_dict, read_toml


@dataclass
class ClusterProfile:
    executor: str = "local"  # local | slurm
    partition: str = ""
    account: str = ""
    qos: str = ""
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1  # one task per GPU on GPU clusters
    gpu_mem_gb: float = 0  # memory per GPU: launch checks with the memory planner that the run fits (0: no check)
    cpus_per_task: int = 2
    mem_gb: int = 0  # 0: the cluster's default
    time_min: float = 60  # the time limit in minutes: whole ones on Slurm (its unit), any on the local executor
    constraint: str = ""
    exclusive: bool = False
    signal_delay_s: int = 90  # USR2 this long before the time limit
    max_requeues: int = 3  # time-outs before giving up (preemptions do not count)
    array_max: int = 1000  # Slurm: trials a sweep launches together go as job arrays of at most this many tasks
    #                        (keep it under the cluster's MaxArraySize); 0 or 1: one job per trial
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (modules, env)
    sbatch: dict[str, str] = field(default_factory=dict)  # extra sbatch parameters

    def validate(self) -> list[str]:
        errs = []
        if self.executor not in ("local", "slurm"):
            errs.append(f"executor: must be local or slurm, got {self.executor!r}")
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "time_min"):
            if getattr(self, key) <= 0:
                errs.append(f"{key}: must be positive, got {getattr(self, key)}")
        for key in ("gpus_per_node", "mem_gb", "gpu_mem_gb", "signal_delay_s", "max_requeues", "array_max"):
            if getattr(self, key) < 0:
                errs.append(f"{key}: must be >= 0, got {getattr(self, key)}")
        if self.executor == "slurm" and self.time_min != int(self.time_min):
            errs.append(f"time_min: Slurm counts whole minutes, got {self.time_min}")
        if self.signal_delay_s >= self.time_min * 60:
            errs.append(f"signal_delay_s: {self.signal_delay_s} s leaves no time within time_min {self.time_min}")
        return errs


def load_profile(path: str | Path) -> ClusterProfile:
    path = Path(path)
    try:
        profile = from_dict(ClusterProfile, read_toml(path))
    except ConfigError as e:
        raise ConfigError(f"profile {path}: {e}") from None
    errors = profile.validate()
    if errors:
        raise ConfigError(f"profile {path}: {errors[0]}")
    return profile
