"""``scaling plan``: parameters and FLOPs counted on the meta device, checked against GigaTok's numbers."""

from __future__ import annotations

import json

import pytest
import torch

from scaling.models.factory import load_config
from scaling.models.factory import build_tokenizer, parameter_counts
from scaling.plan.count import plan
from tests.helpers import run_main

# gigatok.md cost anchors: forward + backward per 256x256 image without LPIPS, discriminator and teacher.
FLOP_ANCHORS = {"gigatok-s-s": 1.25e12, "gigatok-b-l": 2.0e12, "gigatok-xl-xxl": 5.6e12}


def test_plan_json_totals_match_the_model(capsys: pytest.CaptureFixture) -> None:
    proc = run_main(capsys, "plan", "gigatok-s-s", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    with torch.device("meta"):
        counts = parameter_counts(build_tokenizer(load_config("gigatok-s-s")))
    assert out["params_total"] == counts["params_total"] == out["params"]["total"]
    parts = ("encoder_cnn", "encoder_transformer", "quantizer", "decoder_transformer", "decoder_cnn", "semantic_mlp")
    assert sum(out["params"][k] for k in parts) == out["params_total"]
    assert out["flops_per_image"] == pytest.approx(FLOP_ANCHORS["gigatok-s-s"], rel=0.05)


@pytest.mark.parametrize("preset", ["gigatok-b-l", "gigatok-xl-xxl"])
def test_flops_per_image_match_gigatok_cost_anchors(preset: str) -> None:
    result = plan(load_config(preset))
    assert result.flops_per_image == pytest.approx(FLOP_ANCHORS[preset], rel=0.05)
    assert 2.9 < result.flops_per_image / result.flops_forward < 3.0  # backward ~ twice the forward
    assert all(p.is_meta for p in result.model.parameters())


def test_plan_text_with_overrides(capsys: pytest.CaptureFixture) -> None:
    proc = run_main(capsys, "plan", "gigatok-tiny", "--model.layout", "2d")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for label in ("encoder CNN", "encoder transformer", "quantiser", "decoder transformer", "decoder CNN",
                  "semantic MLP", "forward + backward", "layers  2 x TransformerBlock"):
        assert label in proc.stdout, label
    assert "gigatok 2d" in proc.stdout


def test_plan_bad_config_is_one_line_error(capsys: pytest.CaptureFixture) -> None:
    proc = run_main(capsys, "plan", "gigatok-s-s", "--model.decoder_size", "XXXL")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("scaling: error: model.decoder_size: unknown size")
