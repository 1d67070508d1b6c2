"""benchmarks/train_throughput.py: the CPU smoke check on the tiny preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

KEYS = ("device", "torch", "config", "world_size", "micro_batch", "step_s", "images_per_s_per_device",
        "flops_per_image_model", "flops_per_image_executed", "tflops_per_device", "mfu", "peak_rss_bytes",
        "planned_allocated_bytes", "loader_images_per_s")


@pytest.mark.slow  # the benchmark script trains in its own process
def test_benchmark_times_the_trainers_whole_step_on_cpu(tmp_path: Path) -> None:
    """The trainer's step with LPIPS (a random VGG16 standing in for the missing weight file) and the
    discriminator on; the ablation and the profile fill their fields; one JSON line is appended."""
    results = tmp_path / "results.jsonl"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "BENCH_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "gigatok-tiny", "--steps", "2",
           "--warmup", "1", "--micro-batch", "4", "--loader-batches", "5", "--results", str(results), "--ablate",
           "--profile", str(tmp_path / "profile"), "--loss.perceptual_weight", "1", "--loss.gan_weight", "0.5",
           "--loss.vgg_weights", str(tmp_path / "absent-vgg16.pth")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images/s per device" in proc.stdout and "MFU n/a" in proc.stdout
    record = json.loads(results.read_text().splitlines()[-1])
    assert set(KEYS) <= set(record)
    assert record["device"] == "cpu" and record["config"] == "gigatok-tiny" and record["step"] == "trainer"
    for key in KEYS[4:]:
        if key != "mfu":
            assert record[key] > 0, key
    assert record["mfu"] is None  # no bf16 peak for a CPU
    assert record["stand_ins"] == ["vgg16 (LPIPS)"] and record["losses_off"] == []
    assert set(record["flops_per_image_by_part"]) == {"tokenizer", "lpips", "discriminator"}
    assert record["flops_per_image_model"] == sum(record["flops_per_image_by_part"].values())
    assert set(record["step_s_without"]) == {"discriminator", "LPIPS", "all three"}
    assert record["step_s_without"]["all three"] < record["step_s"]
    assert record["profile"]["ms_per_step_by_kind"]["convolution"] > 0


def test_losses_off_names_an_unknown_loss() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "tiny",
                           "--losses-off", "gan,lpips"], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--losses-off: 'lpips' is not one of gan, perceptual, semantic, entropy" in proc.stderr
