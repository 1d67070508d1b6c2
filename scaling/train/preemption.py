"""USR2 -> save -> requeue (lingua style, through submitit).

The signal handler only sets a flag. The training loop checks it at the next step boundary, agreed
across ranks, saves a checkpoint collectively, then hands over to the handler that was installed before
(submitit's, which requeues the job and exits). Outside submitit there is nothing to requeue: the
process exits with ``EXIT_PREEMPTED`` once the checkpoint is safe.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import torch
import torch.distributed as dist

EXIT_PREEMPTED = 3


class PreemptionFlag:
    def __init__(self, signum: int = signal.SIGUSR2):
        self.signum = signum
        self.requested = False
        self._previous = signal.getsignal(signum)
        signal.signal(signum, self._set)

    def _set(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def agreed(self) -> bool:
        """True on every rank when any rank was signalled (one all-reduce; free on a single process)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def hand_over(self) -> None:
        """After the checkpoint is saved: let submitit requeue (it exits), or exit ourselves."""
        signal.signal(self.signum, self._previous)
        if callable(self._previous):
            self._previous(self.signum, None)
        sys.exit(EXIT_PREEMPTED)
