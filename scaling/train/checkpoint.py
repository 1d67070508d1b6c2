"""Checkpoints of everything a run needs, written atomically, kept by a retention policy.

A checkpoint is a directory ``step-NNNNNNNN``: it is written under a ``.tmp`` name, synced, and renamed
into place, so a crash mid-write leaves only a ``.tmp`` directory that is never loaded (and is
removed by the next save).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointStore:
    def __init__(self, root: Path, keep_last: int = 2, milestone_every: int = 0):
        self.root = root
        self.keep_last = keep_last
        self.milestone_every = milestone_every

    def steps(self) -> list[int]:
        """Steps of complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m and (self.root / m.group(0) / STATE_FILE).is_file())

    def path(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        final = self.path(step)
        tmp = final.with_name(final.name + ".tmp")
        tmp.mkdir()
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getbuffer()
        with open(tmp / STATE_FILE, "wb") as f:
            f.write(data[: len(data) // 2])
            fault_point("checkpoint-mid-write", step)
            f.write(data[len(data) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        fault_point("checkpoint-before-rename", step)
        if final.exists():  # a save of this step already landed (e.g. replayed after a crash)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        self._prune()
        return final

    def load(self, step: int) -> dict[str, Any]:
        return torch.load(self.path(step) / STATE_FILE, map_location="cpu", weights_only=False)

    def _prune(self) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep_last :])
        if self.milestone_every:
            keep |= {s for s in steps if s % self.milestone_every == 0}
        for s in steps:
            if s not in keep:
                shutil.rmtree(self.path(s), ignore_errors=True)


def fault_point(name: str, step: int) -> None:
    """Fault injection for crash tests: ``SCALING_FAULT=<name>:<step>`` SIGKILLs this process here."""
    if os.environ.get("SCALING_FAULT") == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
