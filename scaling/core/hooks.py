"""Hooks that tests use through the environment, in one place so that production code names them once.

- ``SCALING_FAULT=<name>:<step>``: SIGKILL this process at fault point ``name`` (crash tests).
- ``SCALING_STEP_DELAY_S=SECONDS``: make each training step that much longer.
- ``SCALING_SAMPLE_TRACE=PREFIX``: each rank appends the samples it trains on to ``PREFIX.rankN``.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any


def fault_point(name: str, step: int) -> None:
    """Fault injection for crash tests: ``SCALING_FAULT=<name>:<step>`` SIGKILLs this process here."""
    if os.environ.get("SCALING_FAULT") == f"{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def trace_samples(rank: int, step: int, indices: Any) -> None:
    """With ``SCALING_SAMPLE_TRACE=PREFIX``, each rank appends the samples it trains on to PREFIX.rankN
    (one JSON line per micro-batch): how tests check that no sample is repeated or skipped across a resume."""
    prefix = os.environ.get("SCALING_SAMPLE_TRACE")
    if prefix:
        with open(f"{prefix}.rank{rank}", "a") as f:
            f.write(json.dumps([step, indices.tolist()]) + "\n")


def step_delay() -> float:
    """``SCALING_STEP_DELAY_S=SECONDS`` makes each step that much longer: how tests make a tiny run outlast a
    scheduler's time limit (a minute at the least) or stop it between two checkpoints."""
    return float(os.environ.get("SCALING_STEP_DELAY_S", 0))
