"""Token structures of the literature as quantisers: product quantisation (ImageFolder) and multi-scale residual
quantisation (VAR, TokenFlow), alone and composed, in every family that takes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scaling.core.config import ConfigError, QuantizerConfig, read_config
from scaling.models.factory import bottleneck, build_tokenizer, load_config
from scaling.models.gigatok import GigaTok
from scaling.models.quantizers import (MultiScaleQuantizer, ProductQuantizer, VectorQuantizer, bottleneck_stats,
                                       build_quantizer, fold_ids, part_ids)
from tests.helpers import cap_vectors, fit_codebooks, start_in_cap

PARTS = ("--quantizer.parts", "2")
SCALES = ("--quantizer.scales", "[1, 2, 4, 8]", "--quantizer.l2_norm", "false")


def test_folded_ids_round_trip_and_each_part_has_its_own_codebook() -> None:
    torch.manual_seed(0)
    pq = ProductQuantizer(QuantizerConfig(codebook_size=16, code_dim=6, parts=3))
    pq.reset_parameters()
    z = torch.randn(2, 6, 4, 4)
    out = pq(z)
    digits = part_ids(out.indices, 16, 3)
    assert torch.equal(fold_ids(digits, 16), out.indices) and int(out.indices.max()) < 16**3
    for q, chunk, d in zip(pq.quantizers, z.chunk(3, dim=1), digits):  # each part as its own VQ would quantise it
        assert torch.equal(q(chunk).indices, d)
    assert torch.allclose(pq.lookup(out.indices), out.z_q.detach(), atol=1e-6)
    assert len({id(q.codebook.weight) for q in pq.quantizers}) == 3


def _train_parts(entropy_weight: float) -> dict[str, float]:
    """Per-part usage after fitting two 64-code parts to unit vectors on one side of each part's sphere, every code
    starting in a narrow cap on the other side (as the single-codebook test in ``test_quantizers``)."""
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=64, code_dim=16, parts=2)
    pq = ProductQuantizer(cfg)
    data = torch.cat([cap_vectors(4096, 8) for _ in range(2)], dim=1)
    for q in pq.quantizers:
        start_in_cap(q)
    fit_codebooks(pq, data, entropy_weight)
    with torch.no_grad():
        return bottleneck_stats([pq(data[:, :, None])], cfg)


def test_each_parts_usage_is_reported_and_the_entropy_loss_raises_it() -> None:
    plain, spread = _train_parts(0.0), _train_parts(0.1)
    assert {"codebook_usage_part0", "codebook_usage_part1", "perplexity_part0", "perplexity_part1"} <= set(plain)
    for p in (0, 1):
        assert spread[f"codebook_usage_part{p}"] > plain[f"codebook_usage_part{p}"] + 0.3, (plain, spread)
        assert spread[f"perplexity_part{p}"] > plain[f"perplexity_part{p}"]
    parts = (spread["codebook_usage_part0"] + spread["codebook_usage_part1"]) / 2
    assert spread["codebook_usage"] == pytest.approx(parts)


def _fit_scales(shared: bool) -> tuple[MultiScaleQuantizer, torch.Tensor]:
    """A multi-scale quantiser whose codebooks have learnt smooth latents' residuals (codebook loss alone)."""
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=64, code_dim=4, l2_norm=False, scales=(1, 2, 4, 8), shared_codebook=shared)
    msq = build_quantizer(cfg)
    msq.reset_parameters()
    latents = F.interpolate(torch.randn(64, 4, 3, 3), size=(8, 8), mode="bilinear") + 0.3 * torch.randn(64, 4, 8, 8)
    opt = torch.optim.Adam(msq.parameters(), lr=3e-2)
    for _ in range(150):
        q = msq(latents[torch.randint(0, 64, (16,))])
        opt.zero_grad()
        q.codebook_loss.backward()
        opt.step()
    return msq, latents


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-scale"])
def test_each_added_scale_brings_the_sum_closer_to_the_latents(shared: bool) -> None:
    msq, latents = _fit_scales(shared)
    assert isinstance(msq, MultiScaleQuantizer) and len(msq.levels) == (1 if shared else 4)
    with torch.no_grad():
        q = msq(latents)
        assert q.indices.shape == (64, 1 + 4 + 16 + 64) and q.distance.shape == q.indices.shape
        assert torch.allclose(msq.lookup(q.indices), q.z_q, atol=1e-5)  # every scale: the decoder's input
        errors = [float((msq.lookup(q.indices[:, :end]) - latents).square().mean()) for end in msq.scale_boundaries()]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    with pytest.raises(ValueError, match=r"3 ids are not whole scales of \[1, 2, 4, 8\]"):
        msq.lookup(q.indices[:, :3])


def test_multi_scale_gradients_reach_the_encoder_straight_through_and_each_scales_codebook() -> None:
    torch.manual_seed(0)
    msq = build_quantizer(QuantizerConfig(codebook_size=32, code_dim=4, l2_norm=False, scales=(1, 2, 4),
                                          shared_codebook=False))
    msq.reset_parameters()
    z = torch.randn(2, 4, 4, 4, requires_grad=True)
    q = msq(z)
    q.z_q.sum().backward(retain_graph=True)
    assert torch.equal(z.grad, torch.ones_like(z))  # the sum of the scales' codes passes gradients straight through
    assert all(level.codebook.weight.grad is None for level in msq.levels)  # ... and none to the codes
    q.codebook_loss.backward()
    assert all(level.codebook.weight.grad.abs().sum() > 0 for level in msq.levels)


@pytest.mark.slow  # trains 60 steps
def test_a_trained_multi_scale_tokenizer_reconstructs_better_with_each_scale() -> None:
    """The tiny CNN tokenizer with scales 2, 4 and 8, trained 60 steps on the synthetic images: decoding the first
    scale alone, then the first two, then all three, the held-out PSNR rises."""
    from scaling.data.synth import class_styles, sample
    from scaling.metrics.pixel import psnr

    styles = class_styles(10)
    images = torch.from_numpy(np.stack([sample(i, 0, styles, 32)[0] for i in range(320)]))
    images = images.permute(0, 3, 1, 2).float() / 127.5 - 1
    train, held_out = images[:256], images[256:]
    cfg = load_config("tiny", ["--quantizer.scales", "[2, 4, 8]", "--quantizer.l2_norm", "false"])
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(60):
        x = train[torch.randint(0, len(train), (16,))]
        recon, q = model(x)
        opt.zero_grad()
        ((recon - x).square().mean() + q.codebook_loss + q.commit_loss).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        q = model(held_out)[1]
        by_scales = [float(psnr(model.decode_indices(q.indices[:, :end]), held_out).mean())
                     for end in model.quantizer.scale_boundaries()]
    # each scale at least as good (within 0.05 dB: this early, the decoder barely uses the finest), all clearly
    # better than the coarsest alone
    assert all(b > a - 0.05 for a, b in zip(by_scales, by_scales[1:])) and by_scales[-1] > by_scales[0] + 0.2, \
        by_scales


@pytest.mark.parametrize("config, args, tokens", [
    ("tiny", SCALES, 85), ("tiny", ("--quantizer.scales", "[1, 1, 2, 4, 4, 8]", "--quantizer.l2_norm", "false"), 102),
    ("tiny", PARTS, 64), ("tiny", PARTS + SCALES, 85), ("titok-tiny", PARTS, 16),
    ("tokenflow-tiny", SCALES, 85),
    ("gigatok-tiny", ("--model.layout", '"2d"', "--quantizer.scales", "[1, 2, 8]", "--quantizer.l2_norm", "false"), 69),
], ids=["vqgan-scales", "vqgan-repeated-scales", "vqgan-parts", "vqgan-both", "titok-parts", "tokenflow-scales",
        "gigatok-2d-scales"])
def test_every_family_that_takes_a_structure_trains_and_decodes_its_ids(config: str, args: tuple[str, ...],
                                                                      tokens: int) -> None:
    torch.manual_seed(0)
    cfg = load_config(config, list(args))
    model = build_tokenizer(cfg)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, q = model(x, 0.01)[:2]
    (recon.square().mean() + q.codebook_loss + q.commit_loss + q.entropy_loss).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        recon, q = model(x)[:2]
        assert q.indices.flatten(1).shape[1] == tokens == bottleneck(cfg, model)["bottleneck_tokens"]
        assert torch.allclose(model.decode_indices(q.indices), recon, atol=1e-4)
    assert 0 < bottleneck_stats([q], cfg.quantizer)["codebook_usage"] <= 1


def test_semantic_regularisation_of_one_part_trains_that_part_only() -> None:
    """ImageFolder: the semantic head reads the regularised part's quantised tokens, so its loss reaches the
    encoder through that part's channels and never through the other's."""
    cfg = read_config("gigatok-tiny", ["--model.layout", '"2d"', *PARTS, "--quantizer.semantic_part", "1"])
    torch.manual_seed(0)
    model = GigaTok(cfg.model, cfg.quantizer, 32, semantic_dim=12)
    _, q, student = model(torch.rand(2, 3, 32, 32), semantic=True)
    assert student.shape == (2, 64, 12)
    student.square().sum().backward()
    rows = model.quant_proj.weight.grad.abs().sum(1)  # quant_proj's output channels: part 0, then part 1
    assert float(rows[:4].sum()) == 0.0 and float(rows[4:].sum()) > 0


@pytest.mark.parametrize("config, args, message", [
    ("tiny", ("--quantizer.parts", "3"), r"quantizer\.parts: 3 parts do not divide quantizer\.code_dim 8"),
    ("tiny", ("--quantizer.parts", "4", "--quantizer.codebook_size", "1024"),
     r"quantizer\.parts: 4 parts of 1024 codes give more ids than int32 holds"),
    ("tiny", ("--quantizer.parts", "2", "--quantizer.kind", "lfq", "--quantizer.code_dim", "6",
              "--quantizer.codebook_size", "64"), r"quantizer\.parts: product quantisation applies to .*'vq' only"),
    ("tiny", ("--quantizer.scales", "[1, 2, 8]"), r"quantizer\.l2_norm: must be false with quantizer\.scales"),
    ("tiny", ("--quantizer.scales", "[1, 4, 2, 8]", "--quantizer.l2_norm", "false"),
     r"quantizer\.scales: positive sides, coarse to fine \(a side may repeat.*got \[1, 4, 2, 8\]"),
    ("tiny", ("--quantizer.scales", "[1, 2, 4]", "--quantizer.l2_norm", "false"),
     r"quantizer\.scales: the last scale must be the latent grid's side 8 \(data\.image_size / 4\), got 4"),
    ("titok-tiny", SCALES, r"quantizer\.scales: multi-scale quantisation applies to 2D tokens only"),
    ("gigatok-tiny", SCALES, r"quantizer\.scales: multi-scale quantisation applies to 2D tokens only"),
    ("tokenflow-tiny", PARTS, r"quantizer\.parts: product quantisation does not apply to model\.family 'tokenflow'"),
    ("tiny", PARTS + ("--quantizer.semantic_part", "2"),
     r"quantizer\.semantic_part: must be -1 \(none\) or a part below quantizer\.parts 2, got 2"),
    ("gigatok-tiny", PARTS + ("--quantizer.semantic_part", "0"),
     r"quantizer\.semantic_part: needs loss\.semantic_weight > 0"),
])
def test_structure_settings_that_cannot_work_are_one_line_errors(config: str, args: tuple[str, ...],
                                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(config, list(args))


def test_a_plain_vq_is_unchanged_by_the_structure_options() -> None:
    """parts 1 and no scales build the plain quantiser: checkpoints of existing runs load as before."""
    assert type(build_quantizer(QuantizerConfig())) is VectorQuantizer


@pytest.mark.parametrize("preset, tokens, bits", [
    ("imagefolder-b", 680, 680 * 2 * 12), ("tokenflow-b-ms", 680, 680 * 15), ("detailflow-b-128", 128, 128 * 13),
    ("imagefolder-tiny", 85, 85 * 2 * 9), ("var-tiny", 85, 85 * 9), ("detailflow-tiny", 16, 16 * 9),
])
def test_the_structure_presets_build_with_the_token_counts_they_state(preset: str, tokens: int, bits: int) -> None:
    cfg = load_config(preset)
    with torch.device("meta"):
        model = build_tokenizer(cfg)
    counted = bottleneck(cfg, model)
    assert (counted["bottleneck_tokens"], counted["bottleneck_bits"]) == (tokens, bits)
