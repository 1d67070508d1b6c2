"""Bad input: one clear line, a non-zero exit before any training step, and an existing run left untouched."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from scaling.cli import main
from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from scaling.core.run_dir import RunDir
from tests.helpers import tiny_args


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def existing_run(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("existing")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert main(["train", "tiny", *tiny_args(synth_data, tmp / "run", uri, **{"train.steps": 2, "optim.warmup_steps": 0,
                                                                             "train.ckpt_every": 1})]) == 0
    return tmp / "run", uri


def _fails_with(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("scaling: error: ")
    for needle in needles:
        assert needle in err, err


def _corrupt_copy(data: Path, tmp: Path) -> Path:
    import shutil

    copy = tmp / "corrupt"
    shutil.copytree(data, copy)
    shard = sorted((copy / "train").rglob("*.mds"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    return shard


CASES = {
    "unknown key": ({"optim.learning_rate": 0.1}, ["optim.learning_rate: unknown key"]),
    "wrong type": ({"train.batch_size": "big"}, ["train.batch_size: expected int, got str 'big'"]),
    "impossible shape": ({"data.image_size": 34}, ["data.image_size: 34 is not divisible", "factor 4"]),
    "missing data": ({"data.train": "/nonexistent/train"}, ["data split /nonexistent/train: directory not found"]),
    "missing weights": ({"loss.perceptual_weight": 1.0, "loss.vgg_weights": "/nonexistent/vgg16.pth"},
                        ["loss.vgg_weights: weight file /nonexistent/vgg16.pth not found"]),
    "different config": ({"optim.lr": 0.005}, ["holds a run with optim.lr = 0.001, not 0.005"]),
    "non-finite number": ({"optim.lr": float("inf")}, ["optim.lr: must be a finite number, got inf"]),
    "split smaller than a batch": ({"train.batch_size": 1024},
                                   ["holds 600 samples, fewer than one global batch (train.batch_size = 1024)"]),
}
if not torch.cuda.is_available():
    CASES["device the machine lacks"] = ({"train.device": "cuda"}, ["train.device: 'cuda' asked for, but this "
                                                                    "machine has no usable CUDA device"])


@pytest.mark.parametrize("case", CASES)
def test_bad_input_against_an_existing_run_fails_cleanly(case: str, existing_run: tuple[Path, str], synth_data: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    run_dir, uri = existing_run
    before = _snapshot(run_dir)
    overrides, needles = CASES[case]
    args = tiny_args(synth_data, run_dir, uri, **{"train.steps": 2, "optim.warmup_steps": 0, "train.ckpt_every": 1})
    for key, value in overrides.items():  # later overrides win
        args += [f"--{key}", f'"{value}"' if isinstance(value, str) else str(value)]
    _fails_with(capsys, ["train", "tiny", *args], *needles)
    assert _snapshot(run_dir) == before


def test_corrupt_shard_is_named_before_training(synth_data: Path, tmp_path: Path, mlflow_uri: str,
                                                capsys: pytest.CaptureFixture) -> None:
    shard = _corrupt_copy(synth_data, tmp_path)
    _fails_with(capsys, ["train", "tiny", *tiny_args(tmp_path / "corrupt", tmp_path / "run", mlflow_uri)],
                f"data shard {shard}: corrupt")
    assert not (tmp_path / "run").exists()  # nothing was created


def test_unwritable_run_directory(synth_data: Path, tmp_path: Path, mlflow_uri: str,
                                  capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    _fails_with(capsys, ["train", "tiny", *tiny_args(synth_data, blocker / "run", mlflow_uri)],
                f"train.run_dir: {blocker / 'run'} is not writable")


def test_foreign_directory_is_not_taken_over(synth_data: Path, tmp_path: Path, mlflow_uri: str,
                                             capsys: pytest.CaptureFixture) -> None:
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    _fails_with(capsys, ["train", "tiny", *tiny_args(synth_data, foreign, mlflow_uri)],
                "is not empty and holds no scaling run")
    assert [p.name for p in foreign.iterdir()] == ["chapter1.tex"]


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(
        synth_data: Path, tmp_path: Path, mlflow_uri: str, capsys: pytest.CaptureFixture) -> None:
    """A learning rate of 1e30 is a finite number: the run starts, its loss turns non-finite within steps, and it
    stops there with one line and exit code 2, a checkpoint every step up to the last finite loss and none after."""
    capsys.readouterr()
    args = tiny_args(synth_data, tmp_path / "run", mlflow_uri, **{
        "optim.lr": 1e30, "optim.min_lr": 0.0, "optim.warmup_steps": 0, "train.steps": 10, "train.ckpt_every": 1,
        "train.log_every": 5, "train.batch_size": 8, "data.val_samples": 8})
    assert main(["train", "tiny", *args]) == 2
    err = capsys.readouterr().err.strip()
    found = re.fullmatch(r"scaling: error: train: the loss is (nan|inf) at step (\d+), the run diverged; its last "
                         r"checkpoint \(step (\d+)\) is kept \(lower optim.lr or set optim.grad_clip, then train a new "
                         r"run\)", err)
    assert found, err
    step, kept = int(found[2]), int(found[3])
    run = RunDir(tmp_path / "run")
    assert kept == step - 1 and CheckpointStore(run.checkpoints).steps() == list(range(1, step))
    assert events.read(run.root)[-1] == {**events.read(run.root)[-1], "event": "diverged", "step": step}
