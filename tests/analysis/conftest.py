"""Shared fixtures for the analysis tests: Epoch's Chinchilla data and the real CLI run in-process."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Callable

import pytest

from scaling.cli import main

DATA = Path(__file__).parent / "data"


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _fit_json(argv: list[str]) -> dict:
    code, out, err = _cli(["fit", *argv])
    assert code == 0, err
    return json.loads(out)


def _user_error(argv: list[str]) -> str:
    code, out, err = _cli(argv)
    assert code == 2, (code, out, err)
    assert err.startswith("scaling: error: ") and err.count("\n") == 1, err
    return err.strip()


@pytest.fixture(scope="session")
def cli() -> Callable[[list[str]], tuple[int, str, str]]:
    """``scaling ARGV`` in this process: (exit code, stdout, stderr)."""
    return _cli


@pytest.fixture(scope="session")
def fit_json() -> Callable[[list[str]], dict]:
    """``scaling fit ARGV``: its stdout parsed as the one JSON object it prints."""
    return _fit_json


@pytest.fixture(scope="session")
def user_error() -> Callable[[list[str]], str]:
    """The message of a ``scaling ...`` call that must fail as a user error: exit 2, one line."""
    return _user_error


@pytest.fixture(scope="session")
def chinchilla_csv() -> Path:
    return DATA / "chinchilla.csv"


@pytest.fixture(scope="session")
def chinchilla_args(chinchilla_csv: Path) -> list[str]:
    """Epoch's recipe: tokens D = C / (6 N), then drop the 5 highest losses (240 rows left)."""
    return [
        str(chinchilla_csv), "--form", "chinchilla", "--x", "Model Size", "--x2", "D", "--y", "loss",
        "--derive", "D=Training FLOP/(6*Model Size)", "--drop-top-loss", "5",
    ]
