"""USR2 -> save -> requeue (lingua style, through submitit); TERM -> save -> stop.

The signal handlers only set a flag. The training loop checks it at the next step boundary, agreed
across ranks, and saves a checkpoint collectively. After USR2 (Slurm's preemption / time-limit signal)
it hands over to the handler that was installed before (submitit's, which requeues the job and exits);
outside submitit there is nothing to requeue and the process exits with ``EXIT_PREEMPTED``. After TERM
(``scancel``, ``scaling cancel``) or a first Ctrl-C (SIGINT, an interactive run) it exits without requeueing,
with ``EXIT_STOPPED``, so that a script can tell a stopped run from a finished one (0); a second Ctrl-C
interrupts at once.

The same USR2 announces a preemption and the time limit; submitit tells them apart by the job's run time (a
time-out uses up one of the profile's ``max_requeues``), and the events log follows its verdict.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Protocol

import torch
import torch.distributed as dist

from scaling.core import events
from scaling.core.runtime import Runtime

# Exit codes of `scaling train` (the README lists them): 0 finished, 1 crashed, 2 bad input (one line, nothing
# trained), 3 preempted outside submitit (checkpoint saved), 4 stopped by TERM, cancel or Ctrl-C (checkpoint saved).
EXIT_PREEMPTED = 3
EXIT_STOPPED = 4
_CODES = {0: None, 1: "preempt", 2: "stop"}


class StopSignals:
    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGUSR2, self._on_usr2)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_int)

    def _on_usr2(self, signum: int, frame: FrameType | None) -> None:
        self.requested = self.requested or "preempt"

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.requested = "stop"  # a cancel wins over a pending preemption

    def _on_int(self, signum: int, frame: FrameType | None) -> None:
        self._on_term(signum, frame)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C does not wait for the step
        print("scaling: stopping at the end of this step, with a checkpoint (Ctrl-C again to abort now)",
              file=sys.stderr, flush=True)

    def agreed(self) -> str | None:
        """'preempt', 'stop' or None, the same on every rank (one all-reduce; free on a single process)."""
        code = {None: 0, "preempt": 1, "stop": 2}[self.requested]
        if dist.is_available() and dist.is_initialized():
            flag = torch.tensor([float(code)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            code = int(flag.item())
        return _CODES[code]

    def event(self, what: str) -> str:
        """The events-log name of an agreed stop: cancelled, timed_out or preempted."""
        if what == "stop":
            return "cancelled"
        return "timed_out" if self._timed_out() else "preempted"

    def _timed_out(self) -> bool:
        """submitit's own verdict on this USR2 (its handler's ``has_timed_out``); no submitit: a preemption."""
        handler = getattr(self._previous[signal.SIGUSR2], "__self__", None)
        return bool(handler is not None and hasattr(handler, "has_timed_out") and handler.has_timed_out())

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def hand_over(self, what: str) -> None:
        """After the checkpoint is saved: requeue through submitit (it exits), or exit ourselves."""
        self.restore()
        if what == "stop":
            sys.exit(EXIT_STOPPED)
        previous = self._previous[signal.SIGUSR2]
        if callable(previous):
            previous(signal.SIGUSR2, None)
        sys.exit(EXIT_PREEMPTED)


class FinishableRun(Protocol):
    """What a stop needs of a tracker (``tracking.Tracker``): to mark the run."""

    def finish(self, status: str = ..., retries: int = ...) -> None: ...


def stop_and_hand_over(stop: str, signals: StopSignals, run_dir: Path, step: int, tracker: FinishableRun,
                       rt: Runtime) -> None:
    """After the checkpoint of a preemption or cancel: record it, mark the MLflow run, requeue or exit."""
    if rt.is_main:
        events.record(run_dir, signals.event(stop), step=step)
    tracker.finish(status="KILLED", retries=2)  # reopened as RUNNING if resumed; a few seconds at most: the
    # scheduler's grace period is short, and what is not sent is in the checkpoint just saved
    rt.close()
    signals.hand_over(stop)
