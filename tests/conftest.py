"""Shared fixtures: a small synthetic MDS dataset and a runner for the real CLI."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scaling.core.checkpoint import CheckpointStore, read_checkpoint
from scaling.core.run_dir import RunDir

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
            timeout: float = 1500, ranks: int = 0) -> subprocess.CompletedProcess:
    """``python -m scaling ARGS`` in a fresh process, as a user would run it; under torchrun with ``ranks``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] \
        if ranks else [sys.executable]
    return subprocess.run([*launcher, "-m", "scaling", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def final_state(run_dir: Path, step: int) -> dict:
    """Checkpoint ``step`` of a run as one dict of full tensors, its pickled train state unpacked."""
    state = read_checkpoint(CheckpointStore(RunDir(run_dir).checkpoints).path(step))
    return state | {"train": pickle.loads(state["train"])}


def assert_bitwise_equal(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")


def train_tiny(data: Path, run_dir: Path, uri: str, **extra: object) -> Path:
    """A short tiny-config training run (150 steps, one checkpoint at the end)."""
    args = {"train.steps": 150, "train.ckpt_every": 150, "train.val_every": 150, "train.log_every": 50, **extra}
    proc = run_cli("train", "tiny", *tiny_args(data, run_dir, uri, **args))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="session")
def tokenizer_run(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny tokenizer, shared by the evaluation and probe tests (which only read it)."""
    tmp = tmp_path_factory.mktemp("tokenizer")
    return train_tiny(synth_data, tmp / "run", f"sqlite:///{tmp / 'mlflow.db'}")
