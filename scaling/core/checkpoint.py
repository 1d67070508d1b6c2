"""Sharded checkpoints (torch DCP), written atomically, kept by a retention policy, resumable on any world size.

A checkpoint is a directory ``step-NNNNNNNN`` in DCP's format: every rank writes its shards into
``step-NNNNNNNN.tmp``; once all have finished, rank 0 renames it into place. A crash mid-write leaves only a
``.tmp`` directory, which is never loaded (and is removed by the next save). Parameters and optimiser state are
DTensors keyed by parameter name, so a checkpoint saved on N ranks loads on M: DCP reshards on load.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

from scaling.core.hooks import fault_point

METADATA = ".metadata"  # DCP writes it last
_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointStore:
    """Checkpoints under ``root``. Reading the list needs no process group; saving and loading are collective.

    ``async_save``: a save copies the state to CPU memory and returns; the write runs in a background thread
    (its own gloo group, so it never interleaves with training's collectives) and is renamed into place by the
    next save or by ``wait``. ``on_saved(path)`` runs on rank 0 once a checkpoint is in place."""

    def __init__(self, root: Path, keep_last: int = 2, milestone_every: int = 0, async_save: bool = False,
                 on_saved: Callable[[Path], None] | None = None):
        self.root = root
        self.keep_last = keep_last
        self.milestone_every = milestone_every
        self.async_save = async_save
        self.on_saved = on_saved
        self._pending: tuple[int, Any] | None = None  # (step, the write's future)
        self._group = dist.new_group(backend="gloo") if async_save and dist.is_initialized() else None

    def steps(self) -> list[int]:
        """Steps of complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m and (self.root / m.group(0) / METADATA).is_file())

    def path(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def _tmp(self, step: int) -> Path:
        """Where ``step`` is written until every rank is done (never loaded)."""
        return self.root / f"step-{step:08d}.tmp"

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def resolve(self, step: int | None) -> int:
        """``step`` if it is a complete checkpoint, the latest for None; else a UserError naming the run."""
        from scaling.core.errors import UserError

        steps, run_dir = self.steps(), self.root.parent
        if not steps:
            raise UserError(f"RUN: {run_dir} has no complete checkpoint")
        if step is not None and step not in steps:
            raise UserError(f"--step: {run_dir} has no checkpoint at step {step} (it has {', '.join(map(str, steps))})")
        return steps[-1] if step is None else step

    def save(self, step: int, state: dict[str, Any], blocking: bool = False) -> Path:
        """Write ``state`` (tensors, DTensors, ``Stateful`` objects, picklable values the same on every rank);
        its final path. With ``async_save`` and not ``blocking`` the path appears once the write is done."""
        self.wait()  # the previous write lands first: checkpoints are renamed in step order
        main = _rank() == 0
        tmp = self._tmp(step)
        if main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob("*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        _barrier()
        if self.async_save and not blocking:
            self._pending = (step, dcp.async_save(state, checkpoint_id=tmp, planner=_FaultInjectingPlanner(step),
                                                  process_group=self._group))
        else:
            dcp.save(state, checkpoint_id=tmp, planner=_FaultInjectingPlanner(step))
            self._land(step)
        return self.path(step)

    def wait(self) -> None:
        """Finish a background write, if one is running, and rename it into place."""
        if self._pending is not None:
            step, future = self._pending
            self._pending = None
            future.result()
            self._land(step)

    def _land(self, step: int) -> None:
        """Every rank has written ``step``'s ``.tmp``: rank 0 renames it into place and prunes old ones."""
        _barrier()
        final = self.path(step)
        if _rank() == 0:
            fault_point("checkpoint-before-rename", step)
            if final.exists():  # a save of this step already landed (e.g. replayed after a crash)
                shutil.rmtree(final)
            os.replace(self._tmp(step), final)
            _fsync_dir(self.root)
            self._prune()
            if self.on_saved is not None:
                self.on_saved(final)
        _barrier()
        fault_point("checkpoint-saved", step)  # a crash right after a complete save (e.g. a node lost)

    def keys(self, step: int) -> set[str]:
        """The flat keys checkpoint ``step`` holds (``module.name``), from its metadata alone."""
        check_readable(self.path(step))
        return set(dcp.FileSystemReader(self.path(step)).read_metadata().state_dict_metadata)

    def load(self, step: int, state: dict[str, Any]) -> None:
        """Load checkpoint ``step`` into ``state`` in place (DCP reshards to this world size)."""
        check_readable(self.path(step))
        dcp.load(state, checkpoint_id=self.path(step))

    def _prune(self) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep_last :])
        if self.milestone_every:
            keep |= {s for s in steps if s % self.milestone_every == 0}
        for s in steps:
            if s not in keep:
                shutil.rmtree(self.path(s), ignore_errors=True)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A whole checkpoint as one nested dict of full tensors, in this process alone (no process group):
    for export, inspection and tests."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    if not (path / METADATA).is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no {METADATA})")
    check_readable(path)
    with tempfile.TemporaryDirectory(prefix="scaling-checkpoint-") as tmp:
        target = Path(tmp) / "consolidated.pt"
        dcp_to_torch_save(path, target)
        return torch.load(target, map_location="cpu", weights_only=False)


def check_readable(path: Path) -> None:
    """Reading a complete checkpoint (one that was renamed into place) that has since been damaged on disk: its
    metadata unreadable, or a shard file missing or shorter than the metadata says, is one line naming the file,
    checked before DCP reads (its own errors name no file, in a traceback of fifty lines)."""
    from scaling.core.errors import UserError
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(path)).read_metadata()
    except Exception as e:
        raise UserError(f"checkpoint {path / METADATA}: corrupt, unreadable ({type(e).__name__}); remove "
                        f"{path} to resume from the checkpoint before it") from None
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        shard = path / name
        have = shard.stat().st_size if shard.is_file() else None
        if have is None or have < size:
            what = "missing" if have is None else f"truncated, {have} bytes where its metadata needs {size}"
            raise UserError(f"checkpoint shard {shard}: {what}; remove {path} to resume from the checkpoint before it")


def load_generator_weights(path: Path, model: torch.nn.Module, ema: bool) -> None:
    """Checkpoint ``path``'s generator weights into a plain (unsharded) ``model``, its EMA over the parameters when
    ``ema``, in this process alone. DCP reads just these entries, resharded to full tensors: no optimiser state,
    no discriminator, so memory is one copy of the model whatever the run's world size."""
    state: dict[str, Any] = {"model": model.state_dict()}
    if ema:
        state["ema"] = {name: torch.empty_like(p) for name, p in model.named_parameters()}
    check_readable(path)
    with warnings.catch_warnings():  # DCP warns that there is no process group even when told so
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=path, no_dist=True)  # in place
    if ema:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(state["ema"][name])


class _FaultInjectingPlanner(DefaultSavePlanner):
    """DCP's default planner; ``SCALING_FAULT=checkpoint-mid-write:<step>`` kills the process halfway through
    the tensors it writes (crash tests)."""

    def __init__(self, step: int):
        super().__init__()
        self._step, self._resolved = step, 0

    def resolve_data(self, write_item: Any) -> Any:
        self._resolved += 1
        if self._resolved == max(2, len(self.plan.items) // 2):
            fault_point("checkpoint-mid-write", self._step)
        return super().resolve_data(write_item)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
