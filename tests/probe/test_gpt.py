"""The probe's GPT: incremental decoding with a key/value cache gives what full forward passes give."""

from __future__ import annotations

import torch

from scaling.probe.gpt import ClassConditionalGPT


def _model(seed: int = 0) -> ClassConditionalGPT:
    torch.manual_seed(seed)
    model = ClassConditionalGPT("tiny", vocab=37, num_classes=5, seq_len=12)
    model.init_weights()
    return model.eval()


def _greedy_without_cache(model: ClassConditionalGPT, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Position i of a causal model sees tokens < i only, so the unknown tail may hold anything (zeros)."""
    seq = torch.zeros(len(labels), model.seq_len, dtype=torch.long)
    null = torch.full_like(labels, model.null_class)
    for i in range(model.seq_len):
        cond = model(seq, labels)[:, i]
        logits = cond if scale == 1.0 else model(seq, null)[:, i] + scale * (cond - model(seq, null)[:, i])
        seq[:, i] = logits.argmax(-1)
    return seq


def test_cached_generation_matches_full_forward_passes() -> None:
    model = _model()
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
