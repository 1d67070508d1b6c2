"""Process start-up: a job's heavy dependencies imported with the cyclic garbage collector paused.

torch, torchtitan, streaming and mlflow leave about half a million long-lived objects. Imported with the collector
running, their growing heap triggers collection after collection while it loads (about 0.8 of the 4 CPU-seconds
every training, probe, requeue and sweep trial spent importing), and every later full collection walks it again
(0.3 s at each process group's teardown). Paused, then frozen (``gc.freeze``: the collector leaves them alone from
then on; they live as long as the process anyway)."""

from __future__ import annotations

import gc
import importlib


def preload(*modules: str) -> None:
    """Import ``modules`` (already imported: nothing) with the collector paused, then freeze every object that
    exists. Call it where a command or job starts, once its input is known to be good."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
