"""Shared fixtures: a small synthetic MDS dataset and a runner for the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 training and 128 validation 32x32 images in 10 classes (what the tiny config expects)."""
    from scaling.data.build import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp("data") / "synth", num_classes=10, train=600, val=128,
                           size=32, seed=0, workers=1, progress=False)


def tiny_args(data: Path, run_dir: Path, tracking_uri: str, **extra: object) -> list[str]:
    """Overrides pointing the shipped tiny config at test data, a run directory and an MLflow store."""
    args = {"data.train": str(data / "train"), "data.val": str(data / "val"), "train.run_dir": str(run_dir),
            "tracking.uri": tracking_uri, "train.progress": False, **extra}
    out: list[str] = []
    for key, value in args.items():
        out += [f"--{key}", _literal(value)]
    return out


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 1500) -> subprocess.CompletedProcess:
    """``python -m scaling ARGS`` in a fresh process, as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "scaling", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
