"""The flow probe: its sampler integrates the rectified-flow ODE from noise to data, guidance mixes as it should,
its validation loss is deterministic, and latents are cached as the decoder takes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling.core.config import ConfigError
from scaling.core.config.schema import probe_kinds
from scaling.core.runtime import init_runtime
from scaling.data.loader import ImageStream
from scaling.models.factory import build_tokenizer, load_config
from scaling.probe.flow import FlowTransformer, flow_loss, latent_norm, sequence_flops
from scaling.probe.kinds import KINDS
from scaling.probe.tokens import cache_tokens, encode, read_tokens
from tests.helpers import tiny_args


def _model(seed: int = 0) -> FlowTransformer:
    torch.manual_seed(seed)
    model = FlowTransformer("tiny", channels=3, num_classes=5, seq_len=6)
    model.init_weights()
    return model.eval()


class ToPoint(FlowTransformer):
    """The exact velocity field of data concentrated at one point x*: x_t = (1 - t) x* + t e gives
    v = e - x* = (x_t - x*) / t, so integrating it from t = 1 to 0 lands on x* whatever the noise."""

    def __init__(self, target: torch.Tensor):
        super().__init__("tiny", channels=target.shape[-1], num_classes=2, seq_len=target.shape[0])
        self.target = target

    def _velocity_of(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (x - self.target) / t[:, None, None]


@pytest.mark.parametrize("sampler, steps", [("euler", 1), ("euler", 7), ("heun", 5)])
def test_samplers_integrate_from_noise_to_the_data(sampler: str, steps: int) -> None:
    target = torch.randn(6, 3)
    out = ToPoint(target).generate(torch.zeros(4, dtype=torch.long), steps, sampler=sampler,
                                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 6, 3) and torch.allclose(out, target.expand(4, 6, 3), atol=1e-5)


def test_guidance_mixes_the_conditional_and_unconditional_velocities() -> None:
    model = _model()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # not the zero start: velocities that differ by class
    x, labels = torch.randn(3, 6, 3), torch.tensor([0, 1, 2])
    t = torch.tensor(0.4)
    with torch.no_grad():
        cond = model(x, t.expand(3), labels)
        uncond = model(x, t.expand(3), torch.full_like(labels, model.null_class))
        assert torch.allclose(model._velocity(x, t, labels, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-5)
        assert torch.equal(model._velocity(x, t, labels, 1.0), cond)
    assert not torch.allclose(cond, uncond)


def test_the_untrained_model_predicts_no_motion_and_the_loss_is_the_velocity_error() -> None:
    model = _model()
    x0, labels = torch.randn(2, 6, 3), torch.tensor([1, 4])
    t, noise = torch.tensor([0.2, 0.9]), torch.randn(2, 6, 3)
    assert torch.equal(model(x0, t, labels), torch.zeros(2, 6, 3))  # the output layer starts at zero
    per_image = flow_loss(model, x0, labels, t, noise, reduction="none")
    assert torch.allclose(per_image, (noise - x0).square().flatten(1).mean(1))
    assert model.features(x0).shape == (2, 64)


def test_validation_loss_is_the_same_whatever_the_batch_it_is_computed_in() -> None:
    cfg = load_config("tiny")
    model = _model()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    x0, labels, index = torch.randn(5, 6, 3), torch.tensor([0, 1, 2, 3, 4]), torch.arange(10, 15)
    loss = KINDS["flow"].val_loss
    with torch.no_grad():
        whole = loss(model, x0, labels, index, cfg)
        parts = torch.cat([loss(model, x0[:2], labels[:2], index[:2], cfg), loss(model, x0[2:], labels[2:], index[2:], cfg)])
        shifted = loss(model, x0, labels, index + 1, cfg)  # other noise
    assert torch.allclose(whole, parts, rtol=1e-6) and not torch.allclose(whole, shifted)


def test_flops_grow_with_the_sequence_and_latents_are_scaled_per_channel() -> None:
    assert sequence_flops("tiny", 8, 10, 128) > 1.9 * sequence_flops("tiny", 8, 10, 64) > 0
    latents = torch.randn(100, 4 * 3) * torch.tensor([1.0, 10.0, 0.1]).repeat(4) + 5
    mean, std = latent_norm(latents, 3)
    scaled = KINDS["flow"].inputs(latents, {"seq_len": 4, "channels": 3, "norm": [mean.tolist(), std.tolist()]})
    assert scaled.shape == (100, 4, 3)
    assert torch.allclose(scaled.flatten(0, 1).mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(scaled.flatten(0, 1).std(0), torch.ones(3), atol=1e-3)


def test_latents_are_cached_as_the_decoder_takes_them(synth_data: Path, tmp_path: Path) -> None:
    """Position-major rows of the tokenizer's z_q (for a 1D continuous tokenizer: (tokens, channels))."""
    cfg = load_config("gigatok-tiny", ["--quantizer.kind", "kl", "--loss.entropy_weight", "0"])
    torch.manual_seed(0)
    tokenizer = build_tokenizer(cfg).eval()
    rt = init_runtime("cpu")
    try:
        meta = cache_tokens(tokenizer, str(synth_data / "val"), tmp_path / "tokens", images=tmp_path / "cache",
                            image_size=32, batch_size=16, part_images=40, rt=rt, source={"step": 0}, latents=True)
    finally:
        rt.close()
    assert (meta["grid"], meta["seq_len"], meta["channels"], meta["count"]) == ([32], 32, 8, 128)
    rows, labels = read_tokens(tmp_path / "tokens", limit=3)
    assert rows.dtype == torch.float32 and rows.shape == (3, 32 * 8) and labels.shape == (3,)
    stream = ImageStream(local=str(synth_data / "val"), shuffle=False)
    images = torch.stack([stream[i][0] for i in range(3)])
    expected = encode(tokenizer, images, 32, torch.device("cpu"), latents=True)  # (3, C, N): the eval-mode mean
    assert expected.shape == (3, 8, 32)
    assert torch.allclose(rows.view(3, 32, 8).transpose(1, 2), expected, atol=1e-5)  # batched otherwise


def test_probe_kinds_follow_the_tokenizer_unless_asked(synth_data: Path, tmp_path: Path) -> None:
    base = tiny_args(synth_data, tmp_path / "run", "sqlite://")
    kl = ["--quantizer.kind", "kl"]
    assert probe_kinds(load_config("tiny", base)) == ("ar",)
    assert probe_kinds(load_config("tiny", base + kl)) == ("flow",)
    assert probe_kinds(load_config("tiny", base + ["--probe.kinds", '["flow", "ar"]'])) == ("flow", "ar")
    with pytest.raises(ConfigError, match=r"^probe\.kinds: the ar probe needs code ids; quantizer\.kind 'kl' gives "
                                          r"continuous tokens \(probe them with 'flow'\)$"):
        load_config("tiny", base + kl + ["--probe.kinds", '["ar"]'])
    with pytest.raises(ConfigError, match=r"^probe\.kinds: each of ar, flow at most once, got \['flow', 'flow'\]$"):
        load_config("tiny", base + ["--probe.kinds", '["flow", "flow"]'])
    with pytest.raises(ConfigError, match=r"^probe\.sampler: must be one of euler, heun, got 'rk4'$"):
        load_config("tiny", base + ["--probe.sampler", "rk4"])
