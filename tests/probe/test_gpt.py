"""The probe's GPT: incremental decoding with a key/value cache gives what full forward passes give."""

from __future__ import annotations

import pytest
import torch

from scaling.models.quantizers import fold_ids
from scaling.probe.gpt import ClassConditionalGPT, sequence_flops, token_nll


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
