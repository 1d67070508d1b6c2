"""Token caching: deterministic, the tokenizer's own codes, and resumable after a kill without redoing parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scaling.core.runtime import init_runtime
from scaling.core.errors import UserError
from scaling.export.generator import load_trained
from scaling.probe.tokens import META_FILE, cache_tokens, encode, read_tokens
from scaling.core.checkpoint import CheckpointStore
from scaling.core.run_dir import load_run_config
from scaling.data.loader import ImageStream

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tokenizer_run")]  # reads the CLI-trained tokenizer_run

DRIVER = """
import sys
from pathlib import Path
from scaling.core.runtime import init_runtime
from scaling.probe.tokens import cache_tokens
from tests.probe.test_tokens import trained
run, split, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
rt = init_runtime("cpu")
tokenizer, step = trained(run)
try:
    cache_tokens(tokenizer, split, out, images=out.parent / "cache" / out.name, image_size=32, batch_size=50, part_images=200, rt=rt, source={"step": step})
finally:
    rt.close()
"""


def trained(run: Path) -> tuple[torch.nn.Module, int]:
    """The run's latest tokenizer, loaded as the probe loads it, and its step."""
    step = CheckpointStore(run / "checkpoints").resolve(None)
    return load_trained(load_run_config(run, [], ()), run, step, False, torch.device("cpu")), step


def _cache(run: Path, split: Path, out: Path, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "SCALING_FAULT": fault} if fault else None
    return subprocess.run([sys.executable, "-c", DRIVER, str(run), str(split), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)


def test_cache_resumes_after_a_kill_and_equals_an_uninterrupted_one(tokenizer_run: Path, synth_data: Path,
                                                                     tmp_path: Path) -> None:
    split = synth_data / "train"
    assert _cache(tokenizer_run, split, tmp_path / "ref").returncode == 0
    out = tmp_path / "killed"
    proc = _cache(tokenizer_run, split, out, fault="token-cache-mid-part:1")
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "part-00000" / "index.json").is_file() and (out / "part-00001.tmp").is_dir()
    assert not (out / META_FILE).exists()  # incomplete: never read as a cache
    done_before = (out / "part-00000" / "index.json").stat().st_mtime_ns
    assert _cache(tokenizer_run, split, out).returncode == 0
    assert (out / "part-00000" / "index.json").stat().st_mtime_ns == done_before  # the finished part was kept
    assert not (out / "part-00001.tmp").exists()

    tokens, labels = read_tokens(out)
    ref_tokens, ref_labels = read_tokens(tmp_path / "ref")
    assert torch.equal(tokens, ref_tokens) and torch.equal(labels, ref_labels)
    meta = json.loads((out / META_FILE).read_text())
    assert meta == json.loads((tmp_path / "ref" / META_FILE).read_text())
    assert (meta["count"], meta["grid"], meta["seq_len"], meta["num_classes"]) == (600, [8, 8], 64, 10)

    # The cached codes are the tokenizer's codes for the stored images, with their labels, in stored order.
    stream = ImageStream(local=str(split), shuffle=False)
    images, ys, _ = zip(*(stream[i] for i in range(0, 600, 37)))
    tokenizer, _ = trained(tokenizer_run)
    expected = encode(tokenizer, torch.stack(images), 32, torch.device("cpu")).flatten(1).long()
    assert torch.equal(tokens[::37], expected) and labels[::37].tolist() == list(ys)
    assert len(tokens.unique()) > 20  # real codes, not a constant


def test_a_cache_of_another_tokenizer_step_is_refused(tokenizer_run: Path, synth_data: Path, tmp_path: Path) -> None:
    assert _cache(tokenizer_run, synth_data / "val", tmp_path / "val").returncode == 0
    tokenizer, step = trained(tokenizer_run)
    with pytest.raises(UserError, match="holds tokens of"):
        cache_tokens(tokenizer, str(synth_data / "val"), tmp_path / "val", images=tmp_path / "cache" / "val",
                     image_size=32, batch_size=50, part_images=200, rt=init_runtime("cpu"), source={"step": step + 1})
