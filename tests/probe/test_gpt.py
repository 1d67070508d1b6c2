"""The probe's GPT: incremental decoding with a key/value cache gives what full forward passes give; next-scale
prediction (VAR) sees only coarser scales and samples as its forward pass predicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling.models.quantizers import fold_ids, scale_blocks
from scaling.core.config.loader import ConfigError
from scaling.core.errors import UserError
from scaling.models.factory import load_config
from scaling.probe.gpt import ClassConditionalGPT, sequence_flops, token_nll
from scaling.probe.kinds import KINDS
from scaling.probe.run import claim_probe_dir
from tests.helpers import tiny_args


def _model(seed: int = 0, parts: int = 1) -> ClassConditionalGPT:
    torch.manual_seed(seed)
    model = ClassConditionalGPT("tiny", vocab=37, num_classes=5, seq_len=12, parts=parts)
    model.init_weights()
    return model.eval()


def _greedy_without_cache(model: ClassConditionalGPT, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Position i of a causal model sees tokens < i only, so the unknown tail may hold anything (zeros)."""
    seq = torch.zeros(len(labels), model.seq_len, dtype=torch.long)
    null = torch.full_like(labels, model.null_class)
    for i in range(model.seq_len):
        cond = model(seq, labels)[:, i]
        logits = cond if scale == 1.0 else model(seq, null)[:, i] + scale * (cond - model(seq, null)[:, i])
        seq[:, i] = fold_ids(list(logits.argmax(-1).unbind(-1)), model.vocab)  # each part's likeliest code
    return seq


@pytest.mark.parametrize("parts", [1, 2])
def test_cached_generation_matches_full_forward_passes(parts: int) -> None:
    model = _model(parts=parts)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        for scale in (1.0, 2.5):
            expected = _greedy_without_cache(model, labels, scale)
            got = model.generate(labels, cfg_scale=scale, top_k=1)
            assert torch.equal(got, expected), scale
    assert not torch.equal(_greedy_without_cache(model, labels, 1.0), _greedy_without_cache(model, labels, 2.5))


def test_sampling_is_seeded_and_stays_in_the_codebook() -> None:
    model = _model()
    labels = torch.arange(5)
    a = model.generate(labels, temperature=1.5, generator=torch.Generator().manual_seed(3))
    b = model.generate(labels, temperature=1.5, generator=torch.Generator().manual_seed(3))
    c = model.generate(labels, temperature=1.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (5, 12) and int(a.min()) >= 0 and int(a.max()) < 37


def test_features_do_not_see_the_label_and_logits_do() -> None:
    model = _model()
    tokens = torch.randint(0, 37, (4, 12))
    assert model.features(tokens).shape == (4, 64)
    assert not torch.allclose(model(tokens, torch.zeros(4, dtype=torch.long)),
                              model(tokens, torch.ones(4, dtype=torch.long)))


def test_a_folded_token_is_one_position_with_a_head_per_part() -> None:
    """Product-quantised tokens (ImageFolder): two parts of 37 codes at each of 12 positions. The sequence stays 12
    long, each part's code is sampled from its own head, the loss is the parts' cross-entropies summed, and the
    model grows by the second part's embedding and head rows only."""
    model = _model(parts=2)
    tokens = model.generate(torch.arange(5), generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (5, 12) and int(tokens.max()) < 37 * 37
    assert len({int(t) // 37 for t in tokens.flatten()}) > 1 and len({int(t) % 37 for t in tokens.flatten()}) > 1
    logits = model(tokens, torch.arange(5))
    assert logits.shape == (5, 12, 2, 37)
    nll = token_nll(logits, tokens)
    by_part = [torch.nn.functional.cross_entropy(logits[:, :, p].transpose(1, 2), (tokens // 37**p) % 37,
                                                 reduction="none") for p in range(2)]
    assert torch.allclose(nll, by_part[0] + by_part[1])
    one = _model(parts=1)
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in one.parameters())
    assert extra == 2 * 37 * 64  # tok_emb and head rows of the second part (width 64)
    assert sequence_flops("tiny", 37, 5, 12, parts=2) > sequence_flops("tiny", 37, 5, 12)


SCALES = (1, 2, 2, 4)  # a side may repeat (ImageFolder's residual scales)


def _scale_model(parts: int = 1) -> ClassConditionalGPT:
    torch.manual_seed(0)
    model = ClassConditionalGPT("tiny", vocab=37, num_classes=5, seq_len=1 + 4 + 4 + 16, parts=parts, scales=SCALES)
    model.init_weights()
    return model.eval()


def test_next_scale_predicts_a_scale_from_the_coarser_ones_only() -> None:
    """Changing scale b's tokens changes no prediction of scales up to b (a scale's own tokens are what it
    predicts) and changes every later scale's."""
    model = _scale_model()
    assert scale_blocks(SCALES) == [(0, 1, 1), (1, 5, 2), (5, 9, 2), (9, 25, 4)]
    tokens, labels = torch.randint(0, 37, (3, 25)), torch.tensor([0, 1, 2])
    with torch.no_grad():
        logits = model(tokens, labels)
        for start, end, _ in scale_blocks(SCALES)[:-1]:
            changed = tokens.clone()
            changed[:, start:end] = (changed[:, start:end] + 1) % 37
            other = model(changed, labels)
            assert torch.equal(other[:, :end], logits[:, :end]), (start, end)
            assert not torch.isclose(other[:, end:], logits[:, end:]).flatten(1).all(1).any(), (start, end)
        assert not torch.allclose(model(tokens, labels + 1)[:, 0], logits[:, 0])  # the first scale: the class


def _greedy_by_scale(model: ClassConditionalGPT, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale by scale through full forward passes, each scale's likeliest codes (the later scales are zeros)."""
    seq = torch.zeros(len(labels), model.seq_len, dtype=torch.long)
    null = torch.full_like(labels, model.null_class)
    for start, end, _ in scale_blocks(model.scales):
        cond, uncond = model(seq, labels)[:, start:end], model(seq, null)[:, start:end]
        logits = cond if scale == 1.0 else uncond + scale * (cond - uncond)
        seq[:, start:end] = fold_ids(list(logits.argmax(-1).unbind(-1)), model.vocab)
    return seq


@pytest.mark.parametrize("parts", [1, 2])
def test_next_scale_sampling_is_what_the_forward_pass_predicts(parts: int) -> None:
    model = _scale_model(parts)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        for scale in (1.0, 2.5):
            assert torch.equal(model.generate(labels, cfg_scale=scale, top_k=1), _greedy_by_scale(model, labels, scale))
    a = model.generate(labels, temperature=1.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, model.generate(labels, temperature=1.5, generator=torch.Generator().manual_seed(3)))
    assert a.shape == (6, 25) and int(a.min()) >= 0 and int(a.max()) < 37**parts and len(a.unique()) > 5
    assert model.features(a).shape == (6, 64)


def test_next_scale_needs_a_multi_scale_tokenizer(synth_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"scales \[1, 2\] hold 5 tokens, not seq_len 6"):
        ClassConditionalGPT("tiny", vocab=37, num_classes=5, seq_len=6, scales=(1, 2))
    base = tiny_args(synth_data, tmp_path / "run", "sqlite://")
    assert load_config("var-tiny", base + ["--probe.order", "scale"]).probe.order == "scale"
    with pytest.raises(ConfigError, match=r"^probe\.order: 'scale' \(next-scale prediction\) needs a multi-scale "
                                          r"tokenizer \(quantizer\.scales\); this one has one token grid$"):
        load_config("tiny", base + ["--probe.order", "scale"])
    with pytest.raises(ConfigError, match=r"^probe\.order: must be one of token, scale, got 'raster'$"):
        load_config("var-tiny", base + ["--probe.order", "raster"])


def test_a_probe_directory_refuses_another_order_and_takes_one_saved_before_the_key(synth_data: Path,
                                                                                   tmp_path: Path) -> None:
    """Its settings are refused when they differ (the results would mix); a directory written before
    ``probe.order`` existed holds the default order, next-token, and is taken as such."""
    base = tiny_args(synth_data, tmp_path / "run", "sqlite://")
    token, scale = (load_config("var-tiny", base + ["--probe.order", o]) for o in ("token", "scale"))
    probe_dir = claim_probe_dir(tmp_path / "run", token, KINDS["ar"])
    with pytest.raises(UserError, match=r"^probe\.order: .* holds a probe with probe\.order = 'token', not 'scale'"):
        claim_probe_dir(tmp_path / "run", scale, KINDS["ar"])
    saved = probe_dir / "probe.toml"
    assert 'order = "token"' in saved.read_text()
    saved.write_text(saved.read_text().replace('order = "token"\n', ""))  # as written before the key
    assert claim_probe_dir(tmp_path / "run", token, KINDS["ar"]) == probe_dir
    with pytest.raises(UserError, match=r"holds a probe with probe\.order = 'token', not 'scale'"):
        claim_probe_dir(tmp_path / "run", scale, KINDS["ar"])
