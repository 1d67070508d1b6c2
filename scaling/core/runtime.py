"""The process group and device mesh of a run: one process or many, one code path.

Under ``torchrun`` (or a Slurm task launched by submitit) the environment names the rank and world; a plain
``scaling train`` is a world of one with an in-process store, so the same FSDP2 and DCP code runs both ways.
gloo on CPU, NCCL (plus gloo for CPU-side collectives) on GPU. The mesh comes from torchtitan's ParallelDims.
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from scaling.core.errors import UserError

_INIT_TIMEOUT = timedelta(minutes=10)


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh | None  # the FSDP (data-parallel shard) mesh over all ranks; None once closed
    owns_group: bool  # this runtime initialised the process group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (no collective in a world of one)."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            # The mesh holds its groups: freed during interpreter shutdown, a gloo group aborts the process
            # ("terminate called without an active exception", exit -6), so it is freed now.
            self.mesh = None
            gc.collect()


def resolve_device(device: str) -> torch.device:
    """``auto``: the local GPU when there is one, else the CPU."""
    if device == "cuda" and not torch.cuda.is_available():
        from scaling.core.errors import UserError

        raise UserError("train.device: 'cuda' asked for, but this machine has no usable CUDA device")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def uses_bf16(precision: str, device: torch.device) -> bool:
    """``precision`` auto: bf16 autocast on GPU, fp32 on CPU."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(precision: str, device: torch.device) -> Any:
    """The compute context ``precision`` asks for: bf16 autocast, or nothing (fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(precision, device) else nullcontext()


def init_runtime(device: str = "auto") -> Runtime:
    """Initialise (or join) the process group and build the data-parallel mesh."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True  # shapes are fixed in training: time cuDNN's algorithms once
    _configure_torchtitan(dev.type)
    owns = not dist.is_initialized()
    if owns:
        _init_process_group(dev.type)
    from torchtitan.distributed.parallel_dims import ParallelDims

    world = dist.get_world_size()
    dims = ParallelDims(dp_replicate=1, dp_shard=-1, cp=1, tp=1, pp=1, ep=1, world_size=world,
                        spmd_backend="partial_dtensor")
    dims.build_mesh()
    rt = Runtime(rank=dist.get_rank(), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                 device=dev, mesh=dims.get_optional_mesh("fsdp"), owns_group=owns)
    # An owned group is always destroyed before interpreter shutdown (see ``close``).
    atexit.register(rt.close)
    return rt


def _configure_torchtitan(device_type: str) -> None:
    """torchtitan reads its device type at import (``cuda`` when there is none), so on CPU it must be told;
    its degree-1 mesh axes use the fake process group, which registers on import. The one place for both."""
    import torch.testing._internal.distributed.fake_pg  # noqa: F401  (registers backend "fake")
    import torchtitan.distributed.parallel_dims as parallel_dims
    import torchtitan.tools.utils as tt_utils

    tt_utils.device_type = parallel_dims.device_type = device_type


def _init_process_group(device_type: str) -> None:
    backend = "cuda:nccl,cpu:gloo" if device_type == "cuda" else "gloo"
    ntasks = os.environ.get("SLURM_NTASKS") or os.environ.get("SUBMITIT_LOCAL_NTASKS") or "1"
    if "RANK" not in os.environ and int(ntasks) > 1:
        import submitit

        # A task of a multi-task submitit job (Slurm or local): rank, world and rendezvous from its environment.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if "RANK" in os.environ:
        dist.init_process_group(backend, timeout=_INIT_TIMEOUT)
    else:  # a world of one needs no rendezvous
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=_INIT_TIMEOUT)


def global_mean(values: dict[str, Any], rt: Runtime) -> dict[str, float]:
    """Each scalar averaged over the ranks (one all-reduce)."""
    keys = sorted(values)
    local = torch.stack([torch.as_tensor(values[k], dtype=torch.float32).detach().to(rt.device).reshape(())
                         for k in keys])
    if rt.world_size > 1:
        dist.all_reduce(local)
        local /= rt.world_size
    return dict(zip(keys, local.tolist()))


def on_main(rt: Runtime, fn: Any) -> Any:
    """``fn()`` on rank 0, its result on every rank; a UserError there is raised on every rank."""
    result: Any = None
    if rt.is_main:
        try:
            result = ("ok", fn())
        except UserError as e:
            result = ("error", str(e))
    status, value = rt.broadcast_object(result)
    if status == "error":
        raise UserError(value)
    return value
