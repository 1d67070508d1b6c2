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
def test_benchmark_tiny_on_cpu_appends_a_json_line(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "BENCH_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "tiny", "--steps", "2", "--warmup", "1",
           "--micro-batch", "4", "--loader-batches", "5", "--results", str(results)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images/s per device" in proc.stdout and "MFU n/a" in proc.stdout
    record = json.loads(results.read_text().splitlines()[-1])
    assert set(KEYS) <= set(record)
    assert record["device"] == "cpu" and record["config"] == "tiny" and record["fsdp"]
    for key in KEYS[4:]:
        if key != "mfu":
            assert record[key] > 0, key
    assert record["mfu"] is None  # no bf16 peak for a CPU
    assert record["flops_per_image_executed"] == record["flops_per_image_model"]  # no checkpointing: no recompute
