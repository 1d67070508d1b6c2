"""``scaling export RUN``: the generator file holds the checkpoint's weights (raw and EMA) bit for bit and
reconstructs exactly as the trained weights do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from scaling.data.loader import to_float, validation_images
from scaling.export.generator import load_generator
from scaling.models.factory import build_tokenizer
from tests.helpers import assert_bitwise_equal, final_state, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ema_run")]  # reads conftest's CLI-trained ema_run


def test_export_round_trips(ema_run: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = ema_run
    out = tmp_path / "g.safetensors"
    proc = run_cli("export", str(run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = final_state(run, 20)  # the run's last checkpoint, the one export takes
    for ema in (False, True):
        model, cfg = load_generator(out, ema=ema)
        expected = state["ema"] if ema else state["model"]
        assert_bitwise_equal(expected, model.state_dict())
    # The exported generator reconstructs exactly as the trained weights do.
    x = to_float(validation_images(cfg.data, tmp_path / "cache")[0][:8])
    reference = build_tokenizer(cfg)
    reference.load_state_dict(state["ema"])
    with torch.no_grad():
        assert torch.equal(model(x)[0], reference.eval()(x)[0])
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
