"""Process start-up: a job's heavy dependencies imported with the cyclic garbage collector paused.

torch, torchtitan, streaming and mlflow leave about half a million long-lived objects. Imported with the collector
running, their growing heap triggers collection after collection while it loads (about 0.8 of the 4 CPU-seconds
every training, probe, requeue and sweep trial spent importing), and every later full collection walks it again
(0.3 s at each process group's teardown). Paused, then frozen (``gc.freeze``: the collector leaves them alone from
then on; they live as long as the process anyway)."""

from __future__ import annotations

import gc
import importlib
import sys


def preload(*modules: str) -> None:
    """Import ``modules`` with the collector paused, then freeze every object that exists. Call it where a command
    or job starts, once its input is known to be good. When all of them are imported already it does nothing: a
    long-lived process that calls it again (a test worker running commands in-process) freezes nothing more, so no
    garbage of its own is ever kept for good."""
    if all(name in sys.modules for name in modules):
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
