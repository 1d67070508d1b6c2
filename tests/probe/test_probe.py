"""``scaling probe RUN`` end to end on the synthetic data, both kinds (the AR probe over code ids, the flow probe
over their code vectors): a trained tokenizer against the same tokenizer before training, resume after a kill in
either, a finished probe does no work, a missing Inception file stops it first."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scaling.core import events
from scaling.core.config import read_config
from scaling.probe import flow, gpt
from tests.helpers import TINY_VIT, literal, run_cli, teacher_features, train_tiny

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tokenizer_run")]  # trains tokenizers and probes (CLI)

PROBE = {"probe.size": "tiny", "probe.steps": 150, "probe.batch_size": 32, "probe.lr": 1e-3, "probe.log_every": 50,
         "probe.ckpt_every": 75, "probe.gfid_samples": 60, "probe.linear_probe_epochs": 30, "eval.num_images": 64,
         "probe.kinds": ["ar", "flow"], "probe.sample_steps": 25}
MARGIN = 0.1  # the linear probe must beat chance (1 in 10 classes) by this much


def _probe(run: Path, inception: Path, cache: Path, fault: str = "", **extra: object):
    args = PROBE | {"eval.inception_weights": str(inception), "eval.stats_cache": str(cache)} | extra
    return _run_probe(run, args, fault)


def _teacher_probe(run: Path, cache: Path, fault: str = "", **extra: object):
    """FID on the run's teacher, a random tiny ViT (``tests.helpers.teacher_features``): this test compares the
    probe's AR loss and linear probe, and Inception at 299x299 would be most of its CPU time (the probe's Inception
    path is the launch and sweep tests')."""
    return _run_probe(run, PROBE | {"eval.fid_features": "teacher", "eval.stats_cache": str(cache)} | extra, fault)


def _run_probe(run: Path, args: dict, fault: str):
    flat = [x for k, v in args.items() for x in (f"--{k}", literal(v))]
    return run_cli("probe", str(run), *flat, env={"SCALING_FAULT": fault} if fault else None)


def _history(run: Path, key: str) -> dict[int, float]:
    """Metric ``key`` by step in the run's MLflow run."""
    client = MlflowClient(read_config(str(run / "config.toml")).tracking.uri)
    return {m.step: m.value for m in client.get_metric_history((run / "mlflow_run_id").read_text().strip(), key)}


def _results(run: Path) -> dict[str, float]:
    """Both kinds' results."""
    return {k: v for kind in ("probe", "flow-probe") for k, v in json.loads((run / kind / "results.json").read_text()).items()}


@pytest.fixture(scope="module")
def untrained(synth_data: Path, random_vit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tokenizer as initialised: one step at a negligible learning rate (the trained one's teacher named)."""
    tmp = tmp_path_factory.mktemp("untrained")
    return train_tiny(synth_data, tmp / "run", f"sqlite:///{tmp / 'mlflow.db'}", **teacher_features(random_vit), **{
        "train.steps": 1, "train.ckpt_every": 1, "train.val_every": 1, "train.log_every": 1, "optim.lr": 1e-9,
        "optim.min_lr": 0.0, "optim.warmup_steps": 0})


def test_probe_separates_a_trained_tokenizer_from_an_untrained_one(tokenizer_run: Path, untrained: Path,
                                                                   tmp_path: Path) -> None:
    t0 = time.perf_counter()
    proc = _teacher_probe(tokenizer_run, tmp_path / "fid", **{"probe.cfg_scales": [1.0, 2.0]})
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The untrained tokenizer's probes, the flow first: killed right after its step-75 checkpoint, it resumes from
    # it when re-run (the kinds share that loop), then the AR probe runs. Their gFID is measured without guidance.
    untrained_args = {"probe.cfg_scales": [1.0], "probe.kinds": ["flow", "ar"]}
    killed = _teacher_probe(untrained, tmp_path / "fid", fault="checkpoint-saved:75", **untrained_args)
    assert killed.returncode == -9
    assert not (untrained / "probe").exists()
    assert _teacher_probe(untrained, tmp_path / "fid", **untrained_args).returncode == 0
    for kind, starts in (("flow-probe", [0, 75]), ("probe", [0])):
        assert [e["step"] for e in events.read(untrained / kind) if e["event"] == "start"] == starts, kind

    trained, base = _results(tokenizer_run), _results(untrained)
    print(f"\nprobe wall time (tiny, CPU, both kinds): {wall:.1f} s\ntrained:   {trained}\nuntrained: {base}")
    assert trained["probe/ar_val_loss"] < base["probe/ar_val_loss"] - 0.1
    assert trained["flow/val_loss"] < base["flow/val_loss"] - 0.1
    assert trained["flow/gfid"] < base["flow/gfid"]  # the same samples, seed and features
    for pre in ("probe", "flow"):
        assert trained[f"{pre}/linear_acc"] > trained[f"{pre}/linear_chance"] + MARGIN, pre
        assert trained[f"{pre}/gfid"] > 0 and trained[f"{pre}/gfid_best_cfg"] > 0
    assert trained["probe/cfg_scale_best"] == 2.0

    client = MlflowClient((tokenizer_run / "config.toml").read_text().split('uri = "')[1].split('"')[0])
    run = client.get_run((tokenizer_run / "mlflow_run_id").read_text().strip())
    assert {"val/psnr", "probe/ar_val_loss", "probe/linear_acc", "probe/gfid", "probe/gfid_cfg2", "probe/train_loss",
            "flow/val_loss", "flow/linear_acc", "flow/gfid", "flow/gfid_cfg2", "flow/train_loss"} <= set(run.data.metrics)
    params = run.data.params
    assert params["probe.size"] == params["flow.size"] == "tiny" and run.info.status == "FINISHED"
    assert params["flow.sample_steps"] == "25" and params["probe.top_k"] == "0"  # each kind its own keys
    assert not {"probe.kinds", "probe.sample_steps", "flow.top_k"} & set(params)
    for pre, sampling in (("probe", {"top_k": "0"}), ("flow", {"sample_steps": "25", "sampler": "euler"})):
        how = {k.removeprefix(f"provenance/{pre}/"): v for k, v in run.data.tags.items()
               if k.startswith(f"provenance/{pre}/")}
        assert (how["fid_features"], how["gfid_samples"], how["cfg_scales"], how["fid_reference_images"]) == \
            (f"teacher:{TINY_VIT}@64", "60", "1,2", "64")
        assert sampling.items() <= how.items(), pre
        assert [m.step for m in client.get_metric_history(run.info.run_id, f"{pre}/train_loss")] == [50, 100, 150]
    # Each probe's compute, its own: the tiny config's 8x8 codes from a 512-entry codebook (8-dimensional code
    # vectors for the flow), 10 classes; the killed and resumed probes log the same totals.
    per_step = {"probe": gpt.sequence_flops("tiny", 512, 10, 64) * PROBE["probe.batch_size"],
                "flow": flow.sequence_flops("tiny", 8, 10, 64) * PROBE["probe.batch_size"]}
    for probed in (tokenizer_run, untrained):
        for pre, flops in per_step.items():
            assert _history(probed, f"{pre}/flops") == {s: s * flops for s in (50, 100, 150)}, (probed, pre)

    # Done once: a re-run returns the results without touching the checkpoints.
    ckpts = [next((tokenizer_run / kind / "checkpoints").iterdir()) for kind in ("probe", "flow-probe")]
    stamps = [c.stat().st_mtime_ns for c in ckpts]
    again = _teacher_probe(tokenizer_run, tmp_path / "fid", **{"probe.cfg_scales": [1.0, 2.0]})
    assert again.returncode == 0 and _results(tokenizer_run) == trained
    assert [c.stat().st_mtime_ns for c in ckpts] == stamps
    assert "ar probe: " in again.stdout and "flow probe: " in again.stdout


def test_missing_inception_file_stops_the_probe_before_any_work(untrained: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    run.mkdir()
    (run / "config.toml").write_text((untrained / "config.toml").read_text())
    proc = _probe(run, tmp_path / "no-inception.pth", tmp_path / "fid")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"scaling: error: eval.inception_weights: weight file {tmp_path / 'no-inception.pth'} " \
                                  "not found"
    assert not (run / "probe").exists()
