"""Cooldown branches: a run started from a trunk's checkpoint in its stable phase ends bitwise where the same
schedule run straight through does, as a child of the trunk's MLflow run; a branch the trunk cannot give is
refused in one line before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scaling.cli import main
from scaling.core import events
from tests.helpers import assert_bitwise_equal, final_state, run_cli, tiny_args

pytestmark = pytest.mark.slow  # trains three runs through the CLI

# Warm-up, then a stable phase; the trunk decays over its last 10 of 30 steps, the branch and the straight run over
# their last 10 of 20. EMA on, so every kind of state crosses the branch point.
COMMON = {"train.batch_size": 8, "train.log_every": 5, "train.val_every": 1000, "train.ckpt_every": 10,
          "train.ema_decay": 0.9, "optim.schedule": "wsd", "optim.warmup_steps": 2, "optim.decay_steps": 10}
TRUNK = COMMON | {"train.steps": 30, "train.milestone_every": 10}
BRANCH_AT = 10


def _train(data: Path, run_dir: Path, uri: str, **extra: object) -> None:
    proc = run_cli("train", "tiny", *tiny_args(data, run_dir, uri, **extra))
    assert proc.returncode == 0, proc.stderr[-3000:]


def _flops(uri: str, run_id: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, "train/flops")}


@pytest.fixture(scope="module")
def trunk(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("trunk")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    _train(synth_data, tmp / "trunk", uri, **TRUNK)
    return tmp / "trunk", uri


def test_a_branch_equals_the_same_schedule_run_straight_through(trunk: tuple[Path, str], synth_data: Path,
                                                                tmp_path: Path) -> None:
    trunk_dir, uri = trunk
    _train(synth_data, tmp_path / "straight", uri, **(COMMON | {"train.steps": 20}))
    branch_dir = tmp_path / "branch"
    _train(synth_data, branch_dir, uri, **(COMMON | {"train.steps": 20, "train.branch_from": str(trunk_dir),
                                                     "train.branch_step": BRANCH_AT}))
    assert_bitwise_equal(final_state(tmp_path / "straight", 20), final_state(branch_dir, 20))
    start = events.read(branch_dir)[0]
    assert (start["event"], start["step"], start["branch_from"]) == ("start", BRANCH_AT, str(trunk_dir))
    run = MlflowClient(uri).get_run((branch_dir / "mlflow_run_id").read_text().strip())
    assert run.data.tags["mlflow.parentRunId"] == (trunk_dir / "mlflow_run_id").read_text().strip()
    straight = _flops(uri, (tmp_path / "straight" / "mlflow_run_id").read_text().strip())
    assert _flops(uri, run.info.run_id) == {s: f for s, f in straight.items() if s > BRANCH_AT}  # compute continues


def test_a_branch_the_trunk_cannot_give_is_refused_before_anything_is_written(
        trunk: tuple[Path, str], synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trunk_dir, uri = trunk
    base = COMMON | {"train.steps": 20, "train.branch_from": str(trunk_dir), "train.branch_step": BRANCH_AT}
    cases = {
        "no checkpoint there": ({"train.branch_step": 15, "train.steps": 25},
                                f"train.branch_step: the trunk {trunk_dir} has no checkpoint at step 15 (it has 10, 20, 30;"),
        "another model": ({"model.base_channels": 8},
                          f"train.branch_from: the trunk {trunk_dir} was trained with model.base_channels = 16, not 8;"),
        "the trunk already decaying": ({"train.branch_step": 30, "train.steps": 40},
                                       "train.branch_step: the trunk's learning rate at step 21 is not the branch's;"),
        "not a run": ({"train.branch_from": str(tmp_path)}, f"train.branch_from: {tmp_path} holds no scaling run"),
    }
    for name, (extra, message) in cases.items():
        run_dir = tmp_path / name.replace(" ", "-")
        assert main(["train", "tiny", *tiny_args(synth_data, run_dir, uri, **(base | extra))]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"scaling: error: {message}") and "\n" not in err, (name, err)
        assert not run_dir.exists(), name
