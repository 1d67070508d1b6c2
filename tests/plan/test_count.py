"""``scaling plan``: parameters and FLOPs counted on the meta device, checked against GigaTok's numbers."""

from __future__ import annotations

import json

import pytest
import torch

from scaling.models.factory import load_config
from scaling.models.factory import build_tokenizer, parameter_counts
from scaling.plan.count import plan, step_flops_done
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
    # GigaTok S-S: 256 1D tokens of a 16384-entry codebook of 8-dimensional codes
    assert out["bottleneck"] == {"bottleneck_tokens": 256, "bottleneck_channels": 8, "bottleneck_floats": 2048,
                                 "bottleneck_bits": 256 * 14}


@pytest.mark.parametrize("config, overrides, expected", [
    ("tiny", [], (64, 8, 9)),  # an 8x8 grid of 512-entry codes
    ("gigatok-tiny", ["--model.layout", "2d"], (64, 8, 9)),
    ("gigatok-tiny", [], (32, 8, 9)),  # 1D: model.num_tokens
    ("titok-tiny", ["--quantizer.kind", "lfq", "--quantizer.code_dim", "6", "--quantizer.codebook_size", "64"],
     (16, 6, 6)),
    ("tokenflow-tiny", [], (64, 16 + 8, 9)),  # a token's decoder input: semantic and pixel codes
    ("flowtok-tiny", [], (16, 8, None)),  # continuous: floats, no bits
])
def test_the_bottleneck_is_tokens_times_channels_and_bits(config: str, overrides: list[str], expected: tuple) -> None:
    from scaling.models.factory import bottleneck

    cfg = load_config(config, overrides)
    with torch.device("meta"):
        model = build_tokenizer(cfg)
    tokens, channels, bits_per_token = expected
    got = bottleneck(cfg, model)
    assert (got["bottleneck_tokens"], got["bottleneck_channels"], got["bottleneck_floats"]) == \
        (tokens, channels, tokens * channels)
    assert got.get("bottleneck_bits") == (tokens * bits_per_token if bits_per_token else None)


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


def test_flops_per_training_image_counts_each_loss_network(capsys: pytest.CaptureFixture) -> None:
    """GigaTok's recipe has every loss network on; each part is counted, and the total is their sum."""
    proc = run_main(capsys, "plan", "gigatok-s-s", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    parts = out["flops_by_part"]
    assert set(parts) == {"tokenizer", "lpips", "teacher", "discriminator"}
    assert parts["tokenizer"] == out["flops_per_image"] and out["flops_per_training_image"] == sum(parts.values())
    # VGG16's 13 convolutions at 256x256: 2 x 15.5 GMAC x (256/224)^2 = 40 GFLOP a forward; LPIPS runs it on
    # both images and back to the reconstruction's input: about 3 forwards.
    assert parts["lpips"] == pytest.approx(3 * 40e9, rel=0.1)
    # DINOv2 ViT-B/14 at 224: 2 x 85.8M weights x 261 tokens, plus 12 layers of attention (2 x 2 x 261^2 x 768).
    assert parts["teacher"] == pytest.approx(2 * 85.8e6 * 261 + 12 * 4 * 261**2 * 768, rel=0.05)
    assert 0 < parts["discriminator"] < parts["lpips"]
    assert "FLOPs per training image" in run_main(capsys, "plan", "gigatok-s-s").stdout


def test_flops_done_is_a_function_of_the_step() -> None:
    parts = {"tokenizer": 100, "lpips": 10, "discriminator": 7}
    assert step_flops_done(parts, 0, 4, 3) == 0
    assert step_flops_done(parts, 3, 4, 3) == 4 * 110 * 3  # the discriminator not yet on
    assert step_flops_done(parts, 5, 4, 3) == 4 * (110 * 5 + 7 * 2)
    assert step_flops_done({"tokenizer": 100}, 5, 4, 3) == 4 * 100 * 5
