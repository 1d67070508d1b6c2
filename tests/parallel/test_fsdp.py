"""FSDP2 on CPU with gloo: many ranks train like one, checkpoints reshard to any world size.

Every run here has the same global batch (12: it splits over 1, 2 and 3 ranks) and an EMA. The resharding
test adds the discriminator, so every kind of state crosses the world-size change; the trajectory tests leave
it out: PatchGAN's BatchNorm normalises over each rank's own images (as LlamaGen's and GigaTok's under DDP),
so with it the loss depends on how the global batch is split.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from scaling.core.checkpoint import read_checkpoint
from tests.helpers import REPO, assert_bitwise_equal, final_state, run_cli, tiny_args

# torchrun, several ranks; on one pytest-xdist worker, so that the module's shared runs train once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fsdp")]

STEPS, HALF = 16, 8
ARGS = {"train.steps": STEPS, "train.batch_size": 12, "train.ckpt_every": HALF, "train.log_every": 2,
        "train.val_every": STEPS, "train.ema_decay": 0.9, "optim.warmup_steps": 2}
GAN = {"loss.gan_weight": 0.1, "loss.gan_start": 4}
# Sums over a different number of ranks associate differently in fp32; nothing else may differ. Adam divides
# by the root of tiny second moments early on, which amplifies those last-bit differences in the weights.
LOSS_RTOL, WEIGHT_RTOL = 1e-4, 2e-3


def _train(synth: Path, run_dir: Path, uri: str, ranks: int, trace: Path | None = None, crash_at: int = 0,
           **extra) -> None:
    """Train through the CLI; ``crash_at``: every rank is SIGKILLed right after that step's checkpoint."""
    env = {"SCALING_SAMPLE_TRACE": str(trace)} if trace else {}
    if crash_at:
        env["SCALING_FAULT"] = f"checkpoint-saved:{crash_at}"
    proc = run_cli("train", "tiny", *tiny_args(synth, run_dir, uri, **(ARGS | extra)), ranks=ranks, env=env)
    assert (proc.returncode != 0) if crash_at else (proc.returncode == 0), proc.stderr[-3000:]


def _losses(uri: str) -> list[float]:
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id])
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]


def _samples(trace: Path) -> dict[int, list[int]]:
    """Step -> the samples all ranks trained on in it, from the per-rank trace files."""
    per_step: dict[int, list[int]] = {}
    for f in trace.parent.glob(trace.name + ".rank*"):
        for line in f.read_text().splitlines():
            step, indices = json.loads(line)
            per_step.setdefault(step, []).extend(indices)
    return per_step


def _assert_close(a: dict, b: dict, where: str) -> None:
    """All weights together within WEIGHT_RTOL in relative L2 norm (and the same names and shapes)."""
    assert a.keys() == b.keys(), where
    x, y = (torch.cat([t[k].flatten().double() for k in sorted(t)]) for t in (a, b))
    rel = float((x - y).norm() / x.norm())
    print(f"{where}: relative L2 difference {rel:.2e}")
    assert rel < WEIGHT_RTOL, f"{where}: relative L2 difference {rel:.2e}"


@pytest.fixture(scope="module")
def one_rank(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("one")
    uri = f"sqlite:///{tmp / 'm.db'}"
    _train(synth_data, tmp / "run", uri, ranks=0, trace=tmp / "trace")
    return {"dir": tmp / "run", "losses": _losses(uri), "samples": _samples(tmp / "trace")}


def test_two_ranks_follow_the_one_rank_trajectory(one_rank: dict, synth_data: Path, tmp_path: Path,
                                                  mlflow_uri: str) -> None:
    _train(synth_data, tmp_path / "run", mlflow_uri, ranks=2, trace=tmp_path / "trace")
    seen = {s: sorted(v) for s, v in _samples(tmp_path / "trace").items()}
    assert seen == {s: sorted(v) for s, v in one_rank["samples"].items()}  # the same global batches
    losses = _losses(mlflow_uri)
    assert len(losses) == STEPS // 2
    assert losses == pytest.approx(one_rank["losses"], rel=LOSS_RTOL)
    two, one = final_state(tmp_path / "run", STEPS), final_state(one_rank["dir"], STEPS)
    _assert_close(one["model"], two["model"], "model")
    _assert_close(one["ema"], two["ema"], "ema")


@pytest.fixture(scope="module")
def two_rank_gan(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of HALF steps on two ranks with every kind of state (EMA, discriminator); the resharding tests only
    read its last checkpoint."""
    tmp = tmp_path_factory.mktemp("two-gan")
    _train(synth_data, tmp / "run", f"sqlite:///{tmp / 'm.db'}", ranks=2, **GAN, **{"train.steps": HALF})
    return tmp / "run"


@pytest.mark.parametrize("ranks", [1, 3])
def test_checkpoint_from_two_ranks_loads_unchanged_on(ranks: int, two_rank_gan: Path, tmp_path: Path) -> None:
    run = two_rank_gan
    out = tmp_path / "resaved"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                           str(REPO / "tests" / "parallel" / "reshard_worker.py"), str(run), str(HALF), str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved, resaved = read_checkpoint(run / "checkpoints" / f"step-{HALF:08d}"), read_checkpoint(out / f"step-{HALF:08d}")
    assert {"model", "ema", "opt_g", "sched_g", "disc", "opt_d", "sched_d", "train"} <= saved.keys()
    assert_bitwise_equal(saved, resaved)  # weights, EMA, both optimisers and schedules, step, data position


def test_killed_on_two_ranks_resumes_on_three_repeating_and_skipping_no_sample(
        one_rank: dict, synth_data: Path, tmp_path: Path, mlflow_uri: str) -> None:
    run, trace = tmp_path / "run", tmp_path / "trace"
    _train(synth_data, run, mlflow_uri, ranks=2, trace=trace, crash_at=HALF)  # a node lost after step 8's save
    assert read_checkpoint(run / "checkpoints" / f"step-{HALF:08d}")  # nothing later was saved
    _train(synth_data, run, mlflow_uri, ranks=3, trace=trace)  # relaunched on another world size: a resume
    seen = {s: sorted(v) for s, v in _samples(trace).items()}
    assert seen == {s: sorted(v) for s, v in one_rank["samples"].items()}
    flat = [i for s in sorted(seen) for i in seen[s]]
    assert len(flat) == len(set(flat)) == STEPS * 12  # within the epoch no sample twice
    final = final_state(run, STEPS)
    assert final["train"]["step"] == STEPS
    _assert_close(final_state(one_rank["dir"], STEPS)["model"], final["model"], "model")
    assert _losses(mlflow_uri) == pytest.approx(one_rank["losses"], rel=LOSS_RTOL)
