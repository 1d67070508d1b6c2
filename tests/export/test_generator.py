"""``scaling export RUN``: the generator file holds the checkpoint's weights (raw and EMA) bit for bit and
reconstructs exactly as the trained weights do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from scaling.cli import main
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


def test_export_never_overwrites_what_it_did_not_write(ema_run: tuple[Path, str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    run, _ = ema_run
    precious = tmp_path / "thesis.pdf"
    precious.write_bytes(b"%PDF precious")
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(precious)]) == 2
    assert capsys.readouterr().err.strip() == (f"scaling: error: --out {precious}: exists and is not a generator "
                                               "`scaling export` wrote; not overwritten (choose another path)")
    assert precious.read_bytes() == b"%PDF precious"
    assert main(["export", str(run), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"scaling: error: --out {tmp_path}: is a directory, not a file path"
    out = tmp_path / "g.safetensors"  # an earlier export is replaced
    assert main(["export", str(run), "--out", str(out), "--step", "10"]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert torch.equal(load_generator(out, ema=False)[0].state_dict()["encoder.conv_in.weight"],
                       final_state(run, 20)["model"]["encoder.conv_in.weight"])
