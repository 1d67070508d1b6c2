"""Checks on a directory a user names for output, before anything is written there."""

from __future__ import annotations

from pathlib import Path

from scaling.core.errors import UserError


def check_dir_path(path: Path, name: str) -> None:
    """``path`` can be (or already is) a directory: neither it nor a folder above it is a file. One line naming
    ``name`` (the key or argument) otherwise, where ``mkdir`` would have failed with a traceback."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{name}: {path} exists and is not a directory")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{name}: {parent} (above {path}) is a file, not a directory")
