"""GigaTok hybrid tokenizer: the shipped presets against GigaTok's parameter counts, and the variants' mechanics."""

from __future__ import annotations

import pytest
import torch

from scaling.core.config import ConfigError
from scaling.models.factory import build_tokenizer, load_config, parameter_counts

# gigatok.md: per-component estimates from GigaTok's code (encoder and decoder include their CNNs) and the
# README totals; all in millions, the totals including the semantic-regularisation MLP.
REFERENCE = {
    "gigatok-s-s": {"encoder": 52.2, "decoder": 77.0, "semantic_mlp": 6.8, "total": 136},
    "gigatok-s-b": {"encoder": 52.2, "decoder": 165.9, "semantic_mlp": 14.2, "total": 232},
    "gigatok-b-l": {"encoder": 140.9, "decoder": 456.4, "semantic_mlp": 24.1, "total": 622},
    "gigatok-xl-xxl": {"encoder": 973.7, "decoder": 1868.2, "semantic_mlp": 51.9, "total": 2900},
}


def tiny(*overrides: str):
    return load_config("gigatok-tiny", list(overrides))


@pytest.mark.parametrize("preset", sorted(REFERENCE))
def test_preset_parameter_counts_match_gigatok(preset: str) -> None:
    with torch.device("meta"):  # 2.9B parameters, no memory
        model = build_tokenizer(load_config(preset))
    assert all(p.is_meta for p in model.parameters())
    counts = parameter_counts(model)
    parts = ("encoder_cnn", "encoder_transformer", "quantizer", "decoder_transformer", "decoder_cnn", "semantic_mlp")
    assert sum(counts[f"params_{k}"] for k in parts) == counts["params_total"]  # nothing counted twice or missed
    for key, millions in REFERENCE[preset].items():
        got = counts[f"params_{key}"] / 1e6
        assert got == pytest.approx(millions, rel=0.02), f"{preset} {key}: {got:.1f}M vs {millions}M"


@pytest.mark.parametrize("overrides, ids_shape", [
    ((), (2, 32)),  # 1D: 32 tokens
    (("--model.layout", "2d"), (2, 8, 8)),  # 2D: the 8x8 CNN grid of a 32x32 image
    (("--model.causal", "true"), (2, 32)),
])
def test_variants_forward_backward(overrides: tuple[str, ...], ids_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_tokenizer(tiny(*overrides))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, q = model(x)
    assert recon.shape == x.shape and q.indices.shape == ids_shape
    (recon.square().mean() + q.codebook_loss + q.commit_loss).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not no_grad, no_grad  # every part is on the gradient path
    with torch.no_grad():
        assert torch.allclose(model.decode_indices(q.indices), recon, atol=1e-5)  # ids alone reproduce it


def _encoder_tokens(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    feats = model.encoder_cnn(x).flatten(2).transpose(1, 2)
    return model.encoder_transformer(feats)[0]


@pytest.mark.parametrize("causal", [True, False])
def test_causal_queries_do_not_see_later_ones(causal: bool) -> None:
    torch.manual_seed(0)
    model = build_tokenizer(tiny("--model.causal", "true" if causal else "false"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before = _encoder_tokens(model, x)
        model.encoder_transformer.queries[:, 20:] += torch.randn(1, 12, 64)  # only the queries after token 19
        after = _encoder_tokens(model, x)
    assert not torch.allclose(after[:, 20:], before[:, 20:])
    assert torch.allclose(after[:, :20], before[:, :20], atol=1e-6) == causal


def test_built_on_meta_then_materialised() -> None:
    cfg = tiny()
    with torch.device("meta"):
        model = build_tokenizer(cfg)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    recon, q = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert torch.isfinite(recon).all() and torch.isfinite(q.commit_loss)


@pytest.mark.parametrize("overrides, message", [
    (("--model.encoder_size", "M"), r"model\.encoder_size: unknown size 'M'"),
    (("--model.num_tokens", "65"), r"model\.num_tokens: 65 is more than the 8x8 CNN grid"),
    (("--model.layout", "2d", "--model.causal", "true"),
     r"model\.causal: applies to model\.family 'gigatok' with model\.layout '1d' only"),
    (("--loss.semantic_weight", "0.5", "--loss.semantic_teacher_weights", "t.pth", "--loss.semantic_layer", "3"),
     r"loss\.semantic_layer: 3 is beyond the 2 layers of model\.decoder_size 'tiny'"),
])
def test_bad_gigatok_settings_are_one_line_errors(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny(*overrides)


def test_semantic_regularisation_needs_gigatok() -> None:
    with pytest.raises(ConfigError, match=r"loss\.semantic_weight: semantic regularisation needs model\.family"):
        load_config("tiny", ["--loss.semantic_weight", "0.5", "--loss.semantic_teacher_weights", "t.pth"])
