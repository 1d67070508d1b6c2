"""A run directory: claimed once, resumed by the same config, never overwritten by another."""

from __future__ import annotations

import os
from pathlib import Path

from scaling.core.config import Config
from scaling.core.config.loader import config_to_dict, dump_toml, flatten, read_toml
from scaling.core.errors import UserError

CONFIG_FILE = "config.toml"
# Keys that may differ on resume: they change neither the model nor the sample stream (a dataset may
# move, e.g. from local disk to object storage; its shards are verified wherever it is).
# How a run is spread over ranks may change too (elastic resume): the global batch stays train.batch_size.
RESUMABLE_CHANGES = ("train.steps", "train.progress", "train.log_every", "data.train", "data.val",
                     "data.num_workers", "data.cache_dir", "tracking.uri", "tracking.parent_run_id", "parallel.micro_batch_size",
                     "parallel.activation_checkpoint", "parallel.compile", "parallel.float8",
                     "parallel.float8_recipe", "parallel.float8_emulate", "parallel.reshard_after_forward",
                     "train.async_checkpoint")
# Sections that never touch training: evaluation and the probe read a finished run.
RESUMABLE_SECTIONS = ("eval.", "probe.")


def check_run_dir(cfg: Config) -> bool:
    """Read-only checks; True when the directory holds this run already (a resume)."""
    run_dir = Path(cfg.train.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"train.run_dir: {run_dir} exists and is not a directory")
    saved = run_dir / CONFIG_FILE
    if saved.is_file():
        # A key the saved config lacks was added to the schema since: the run used its default.
        old = flatten(config_to_dict(Config())) | flatten(read_toml(saved))
        new = flatten(config_to_dict(cfg))
        for key in sorted(set(old) | set(new)):
            resumable = key in RESUMABLE_CHANGES or key.startswith(RESUMABLE_SECTIONS)
            if not resumable and old.get(key) != new.get(key):
                raise UserError(
                    f"train.run_dir: {run_dir} holds a run with {key} = {old.get(key)!r}, not {new.get(key)!r}; "
                    "resume with the same config or choose a new train.run_dir")
        return True
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UserError(f"train.run_dir: {run_dir} is not empty and holds no scaling run; choose a new directory")
    return False


def claim_run_dir(cfg: Config) -> Path:
    """Create the directory (checking that it is writable) and save the resolved config."""
    run_dir = Path(cfg.train.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        tmp = run_dir / (CONFIG_FILE + ".tmp")
        tmp.write_text(dump_toml(cfg))
        os.replace(tmp, run_dir / CONFIG_FILE)
    except OSError as e:
        raise UserError(f"train.run_dir: {run_dir} is not writable ({e.strerror})") from None
    return run_dir


def load_run_config(run_dir: Path, overrides: list[str], may_change: tuple[str, ...]) -> Config:
    """A finished run's saved config with ``--key VALUE`` overrides of keys starting with ``may_change`` only
    (what evaluation and the probe may set without touching what was trained)."""
    from scaling.core.config.loader import ConfigError, load_config, merge, parse_overrides

    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        raise UserError(f"RUN: {run_dir} is not a scaling run directory (no {CONFIG_FILE})")
    changes = parse_overrides(overrides)
    for key in flatten(changes):
        if not key.startswith(may_change):
            raise ConfigError(f"{key}: cannot change a trained run here (allowed: {', '.join(may_change)})")
    return load_config(None, merge(read_toml(saved), changes))
