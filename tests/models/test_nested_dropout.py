"""Nested dropout of 1D tokens: every prefix length decodes, the tail is ignored, and training with it makes
every prefix better, keeps more tokens better than fewer, and beats training without it on short prefixes;
DetailFlow's coarse-to-fine targets: their map, their images, and what training on them changes; FlexTok's flow
decoder: it decodes every prefix, and more tokens decode closer to the image."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from scaling.core.config import Config, ConfigError
from scaling.data.loader import to_float, train_loader, validation_images
from scaling.models.factory import build_tokenizer, load_config
from scaling.models.nested import NestedDropout, coarse_targets, target_side
from scaling.optim.schedule import lr_multiplier
from tests.helpers import tiny_args

NESTED = ["--model.nested_dropout", "true"]


@pytest.mark.parametrize("config", ["titok-tiny", "gigatok-tiny"])
def test_every_prefix_length_decodes_and_ignores_the_tail(config: str) -> None:
    torch.manual_seed(0)
    cfg = load_config(config, NESTED)
    model = build_tokenizer(cfg).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        q = model.encode(x)
        k_all = q.indices.shape[1]
        images = [model.decode_indices(q.indices[:, :k]) for k in range(1, k_all + 1)]
        for k, image in enumerate(images, start=1):
            assert image.shape == x.shape and torch.isfinite(image).all(), k
            assert torch.allclose(image, model.decode(q.z_q, keep=k), atol=1e-5), k
        assert torch.allclose(images[-1], model(x)[0], atol=1e-5)  # eval mode keeps every token
        assert not torch.allclose(images[0], images[-1], atol=1e-3)  # the tail is not ignored when kept
        other = q.indices.clone()
        other[:, k_all // 2:] = (other[:, k_all // 2:] + 1) % cfg.quantizer.codebook_size
        masked = model.decode(model.quantizer.lookup(other), keep=k_all // 2)
        assert torch.allclose(masked, images[k_all // 2 - 1], atol=1e-5)  # ids past the prefix change nothing


def test_training_masks_a_random_tail_per_image() -> None:
    torch.manual_seed(0)
    model = build_tokenizer(load_config("titok-tiny", NESTED))
    z = torch.randn(64, 8, 16)
    out = model.nested(z)  # training mode: a prefix of 1..16 per image
    kept = (out == z).all(1).sum(1)  # tokens left as they were, per image
    assert torch.equal((out != z).all(1), torch.arange(16) >= kept[:, None])  # a prefix, then only mask codes
    assert kept.min() >= 1 and kept.unique().numel() > 8  # every image keeps one token at least; lengths vary


@pytest.mark.parametrize("config, overrides", [
    ("tiny", NESTED), ("gigatok-tiny", NESTED + ["--model.layout", "2d"])], ids=["vqgan", "gigatok-2d"])
def test_nested_dropout_needs_1d_tokens(config: str, overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"model\.nested_dropout: applies to 1D tokens only"):
        load_config(config, overrides)


def _prefix_errors(model: torch.nn.Module, x: torch.Tensor, prefixes: tuple[int, ...],
                   coarse: Config | None = None) -> list[float]:
    """Each prefix's mean squared error against the image or, given a config (``coarse``), its DetailFlow target."""
    model.eval()
    with torch.no_grad():
        z_q = model.encode(x).z_q
        errors = [float((model.decode(z_q, keep=k) - (x if coarse is None else _coarse(x, k, coarse))).square().mean())
                  for k in prefixes]
    model.train()
    return errors


def _coarse(x: torch.Tensor, k: int | torch.Tensor, cfg: Config) -> torch.Tensor:
    """The DetailFlow targets of prefixes of k tokens under ``cfg``'s map."""
    m = cfg.model
    return coarse_targets(x, torch.as_tensor(k).expand(len(x)), m.num_tokens, m.coarse_power, m.coarse_min_side)


def _train(model: torch.nn.Module, cfg: Config, cache: Path, steps: int = 300, batch: int = 16,
           scheduled: bool = False) -> None:
    """The trainer's objective without its machinery: reconstruction, VQ terms and entropy loss; a constant
    rate of 1e-3, or (``scheduled``) the config's own rate and schedule (``optim``)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr if scheduled else 1e-3)
    multiplier = lr_multiplier(cfg.optim, steps) if scheduled else (lambda step: 1.0)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, multiplier)
    loader, done = train_loader(cfg.data, batch, 0, cache), 0
    while done < steps:
        for images, *_ in itertools.islice(loader, steps - done):  # (images, labels, sample indices)
            x = to_float(images)
            recon, q = model(x, cfg.loss.entropy_temperature)
            target = _coarse(x, q.kept, cfg) if cfg.model.coarse_to_fine else x
            loss = ((recon - target).square().mean() + q.codebook_loss + q.commit_loss
                    + cfg.loss.entropy_weight * q.entropy_loss)  # without it the tiny codebook collapses
            opt.zero_grad()
            loss.backward()
            opt.step()
            decay.step()
            done += 1


@pytest.mark.slow
def test_nested_dropout_training_improves_every_prefix(synth_data: Path, tmp_path: Path) -> None:
    """Nested dropout against none."""
    prefixes, models, errors = (1, 2, 4, 8, 16), {}, {}
    for nested in (True, False):
        args = (NESTED if nested else []) + tiny_args(synth_data, tmp_path / "run", "sqlite://")
        cfg = load_config("titok-tiny", args)
        torch.manual_seed(0)
        models[nested] = build_tokenizer(cfg)
        val = to_float(validation_images(cfg.data, tmp_path / "cache")[0][:64])
        if nested:
            errors["before"] = _prefix_errors(models[nested], val, prefixes)
        _train(models[nested], cfg, tmp_path / "cache")
    plain = models[False]
    plain.nested = NestedDropout(cfg.quantizer.code_dim)  # decode its prefixes with a zero code for the tail
    torch.nn.init.zeros_(plain.nested.mask)
    before, after = errors["before"], _prefix_errors(models[True], val, prefixes)
    without = _prefix_errors(plain, val, prefixes)
    assert all(a < 0.5 * b for a, b in zip(after, before)), (before, after)  # every prefix length learnt
    # ordered tokens: each longer prefix as good within 1% (the last tokens of this tiny model add next to nothing),
    # the first token alone clearly worse than all 16
    assert all(a >= 0.99 * b for a, b in zip(after, after[1:])) and after[0] > 1.08 * after[-1], after
    assert all(a < w for a, w in zip(after[:4], without[:4])), (after, without)  # prefixes of 1-8: nested is better


@pytest.mark.slow
def test_detailflow_targets_beat_plain_nested_dropout_at_short_prefixes(synth_data: Path, tmp_path: Path) -> None:
    """DetailFlow's claim at tiny scale, on the 1D GigaTok (a CNN decoder): trained against the degraded targets,
    its first one and two tokens meet those targets better than the same model's trained on the whole image;
    against the whole image, more tokens are still better. By hand, over seeds 0-3, the own-target error at 1 and 2
    tokens was 0.49-0.63 and 0.63-0.73 times plain nested dropout's; it needs these 300 steps of 32 (at 200 the
    ratio is 0.7-0.85). titok-tiny's ViT decoder does not show it: its short prefixes are blurs near the targets
    whether trained on them or not, where this decoder's, trained on the whole image, draw shapes."""
    prefixes, own, whole = (1, 2, 32), {}, {}
    for coarse in (False, True):
        args = NESTED + (["--model.coarse_to_fine", "true"] if coarse else [])
        cfg = load_config("gigatok-tiny", args + tiny_args(synth_data, tmp_path / "run", "sqlite://"))
        torch.manual_seed(0)
        model = build_tokenizer(cfg)
        val = to_float(validation_images(cfg.data, tmp_path / "cache")[0])
        _train(model, cfg, tmp_path / "cache", steps=300, batch=32, scheduled=True)
        # both against the same targets: the map's keys are set whether or not a model trains on it
        own[coarse], whole[coarse] = _prefix_errors(model, val, prefixes, cfg), _prefix_errors(model, val, prefixes)
    assert all(c < 0.85 * p for c, p in zip(own[True][:2], own[False][:2])), own  # 1 and 2 tokens: clearly better
    assert whole[True][0] > whole[True][1] > whole[True][2], whole


FLOW = NESTED + ["--model.flow_decoder", "true", "--model.flow_decode_steps", "8"]


@pytest.mark.parametrize("prediction", ["x", "v"])
def test_the_flow_decoder_decodes_every_prefix_from_seeded_noise(prediction: str) -> None:
    torch.manual_seed(0)
    model = build_tokenizer(load_config("titok-tiny", FLOW + ["--model.flow_prediction", f'"{prediction}"']))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, q = model(x)  # training: the one-step estimate at a random time, every parameter in the graph
    (recon.square().mean() + q.codebook_loss + q.commit_loss).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        images = [model.decode(q.z_q, keep=k) for k in range(1, 17)]
        assert all(image.shape == x.shape and torch.isfinite(image).all() for image in images)
        assert torch.equal(model.decode(q.z_q, keep=3), images[2])  # the same tokens, the same image
        assert torch.allclose(model.decode_indices(q.indices[:, :5]), images[4], atol=1e-4)  # ids of a prefix too
        assert not torch.allclose(images[0], images[-1])
        # one Euler step from the noise x_1 to t = 0: the network's image (x), or x_1 less its velocity (v)
        model.flow_steps = 1
        noise = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
        model.flow_prediction = "x"  # the network's own output, whatever it was trained to predict
        out = model._denoise(model.nested(q.z_q, 16), noise, torch.ones(2))
        model.flow_prediction = prediction
        expected = out if prediction == "x" else noise - out
        assert torch.allclose(model.decode(q.z_q, keep=16), expected, atol=1e-5)
    with pytest.raises(ConfigError, match=r"model\.flow_decoder: applies to model\.family 'titok' only"):
        load_config("gigatok-tiny", ["--model.flow_decoder", "true"])


@pytest.mark.slow
def test_the_flow_decoders_prefix_psnr_rises_with_the_tokens_kept(synth_data: Path, tmp_path: Path) -> None:
    """FlexTok's claim at tiny scale: trained, a flow decoder's samples of longer prefixes are closer to the image.
    The config's run (600 steps of 32, its warm-up and cosine): at half of that, the tiny tokenizer leaves its later
    tokens nearly unused and the samples' noise can hide what they add."""
    cfg = load_config("titok-tiny", FLOW + ["--model.flow_decode_steps", "25"]
                      + tiny_args(synth_data, tmp_path / "run", "sqlite://"))
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    val = to_float(validation_images(cfg.data, tmp_path / "cache")[0])
    _train(model, cfg, tmp_path / "cache", steps=cfg.train.steps, batch=cfg.train.batch_size, scheduled=True)
    errors = _prefix_errors(model, val, (1, 4, 16))
    assert errors[0] > errors[1] > errors[2], errors  # PSNR, 10 log10(4 / error), rises


def test_detailflows_map_goes_from_one_pixel_to_the_whole_image() -> None:
    sides = [target_side(k, 16, 32, 1.5) for k in range(1, 17)]
    assert sides[0] == 1 and sides[-1] == 32 and sides == sorted(sides)
    assert sides[7] > 16  # power 1.5: more than half the side with half the tokens
    assert [target_side(k, 16, 32, 1.0) for k in (1, 16)] == [1, 32] and target_side(1, 16, 32, 1.5, 4) == 4
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    targets = coarse_targets(x, torch.tensor([1, 16, 8]), 16, 1.5)
    assert torch.allclose(targets[0], x[0].mean((1, 2), keepdim=True).expand(3, 32, 32), atol=1e-5)  # a flat colour
    assert torch.equal(targets[1], x[1])  # every token: the image itself
    assert 0 < float((targets[2] - x[2]).abs().mean()) < float((targets[0] - x[0]).abs().mean())


def test_coarse_to_fine_training_compares_each_image_with_its_prefixs_target() -> None:
    from scaling.train.step import generator_losses

    cfg = load_config("titok-tiny", NESTED + ["--model.coarse_to_fine", "true", "--loss.perceptual_weight", "0"])
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    recon, q = model(x)
    assert q.kept.shape == (4,) and 1 <= int(q.kept.min()) and int(q.kept.max()) <= 16
    losses = generator_losses(cfg, x, recon, q, None, None)
    target = coarse_targets(x, q.kept, 16, 1.5)
    assert torch.allclose(losses["recon"], (recon - target).square().mean())
    assert not torch.allclose(losses["recon"], (recon - x).square().mean())
    model.eval()
    assert model(x)[1].kept is None  # evaluation keeps every token


@pytest.mark.parametrize("overrides, message", [
    (["--model.coarse_to_fine", "true"], r"model\.coarse_to_fine: needs model\.nested_dropout"),
    (NESTED + ["--model.coarse_to_fine", "true", "--model.flow_decoder", "true"],
     r"model\.coarse_to_fine: not with model\.flow_decoder"),
    (NESTED + ["--model.coarse_to_fine", "true", "--model.coarse_power", "0"], r"model\.coarse_power: must be > 0"),
    (FLOW + ["--model.flow_prediction", '"eps"'], r"model\.flow_prediction: must be 'x' or 'v', got 'eps'"),
])
def test_prefix_settings_that_cannot_work_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("titok-tiny", overrides)
