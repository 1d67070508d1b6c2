"""Quantisers behind one interface: VQ with the rotation trick, FSQ, LFQ, and the global-batch entropy loss."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scaling.core.config import ConfigError, QuantizerConfig
from scaling.models.factory import load_config
from scaling.models.factory import build_tokenizer
from scaling.models.quantizers import (FSQ, LFQ, ContinuousBottleneck, VectorQuantizer, bottleneck_stats,
                                       codebook_stats, entropy_loss, rotate_to)
from tests.helpers import cap_vectors, fit_codebooks, start_in_cap

FSQ_ARGS = ("--quantizer.kind", "fsq", "--quantizer.levels", "[8, 5, 5]", "--quantizer.code_dim", "3",
            "--quantizer.codebook_size", "200", "--loss.entropy_weight", "0")
LFQ_ARGS = ("--quantizer.kind", "lfq", "--quantizer.code_dim", "6", "--quantizer.codebook_size", "64")
KL_ARGS = ("--quantizer.kind", "kl", "--quantizer.kl_weight", "0.01", "--loss.entropy_weight", "0")
CONTINUOUS_ARGS = ("--quantizer.kind", "continuous", "--loss.entropy_weight", "0")


def test_rotation_trick_keeps_the_code_and_rotates_the_gradient() -> None:
    torch.manual_seed(0)
    z, q, g = torch.randn(5, 8, requires_grad=True), torch.randn(5, 8), torch.randn(5, 8)
    out = rotate_to(z, q)
    assert torch.allclose(out, q, atol=1e-5)
    (out * g).sum().backward()
    scale = q.norm(dim=1) / z.detach().norm(dim=1)
    assert torch.allclose(z.grad.norm(dim=1), scale * g.norm(dim=1), atol=1e-5)  # a rotation keeps lengths
    assert not torch.allclose(z.grad, g, atol=1e-3)  # ...and is not the straight-through identity
    aligned = (2 * q).requires_grad_()  # z already points at q: the rotation is the identity
    (rotate_to(aligned, q) * g).sum().backward()
    assert torch.allclose(aligned.grad, 0.5 * g, atol=1e-5)


def test_vq_rotation_trick_gives_the_same_codes() -> None:
    torch.manual_seed(0)
    plain = VectorQuantizer(QuantizerConfig(codebook_size=64))
    plain.reset_parameters()
    rotated = VectorQuantizer(QuantizerConfig(codebook_size=64, rotation_trick=True))
    rotated.load_state_dict(plain.state_dict())
    z = torch.randn(2, 8, 4, 4)
    a, b = plain(z), rotated(z)
    assert torch.equal(a.indices, b.indices) and torch.allclose(a.z_q, b.z_q, atol=1e-5)


def test_fsq_rounds_to_its_grid_and_ids_round_trip() -> None:
    fsq = FSQ(QuantizerConfig(kind="fsq", levels=(8, 5, 5), code_dim=3, codebook_size=200))
    z = torch.linspace(-6, 6, 4000).view(1, 1, -1).expand(1, 3, -1).contiguous().requires_grad_()
    q = fsq(z)
    for dim, n in enumerate((8, 5, 5)):
        assert q.z_q[0, dim].detach().unique().numel() == n  # every level reached, no more
    assert torch.equal(fsq.lookup(q.indices), q.z_q.detach())
    assert q.z_q.abs().max() <= 1
    q.z_q.sum().backward()
    assert z.grad.abs().sum() > 0  # straight through the rounding
    spread = FSQ(fsq.cfg)(torch.randn(1, 3, 20000) * 3)
    assert spread.indices.unique().numel() == 200  # all codes, ids in [0, 200)


def test_lfq_codes_are_signs_and_ids_round_trip() -> None:
    lfq = LFQ(QuantizerConfig(kind="lfq", code_dim=6, codebook_size=64))
    z = torch.randn(2, 6, 50, requires_grad=True)
    q = lfq(z, entropy_temperature=0.01)
    assert set(q.z_q.detach().unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(lfq.lookup(q.indices), q.z_q.detach())
    assert q.indices.max() < 64 and torch.isfinite(q.entropy_loss) and q.commit_loss > 0
    (q.z_q.sum() + q.commit_loss + q.entropy_loss).backward()
    assert z.grad.abs().sum() > 0


def test_distance_is_from_the_encoder_output_to_its_code() -> None:
    """``QuantOut.distance``: per token, the l2 distance the quantiser moved it (what ``scaling eval`` plots)."""
    torch.manual_seed(0)
    z = torch.randn(2, 6, 3, 5)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=64, code_dim=6))
    vq.reset_parameters()
    lfq = LFQ(QuantizerConfig(kind="lfq", code_dim=6, codebook_size=64))
    for quantizer, seen in ((vq, torch.nn.functional.normalize(z, dim=1)), (lfq, z)):  # vq compares unit vectors
        q = quantizer(z)
        assert q.distance.shape == q.indices.shape
        assert torch.allclose(q.distance, (seen - quantizer.lookup(q.indices)).norm(dim=1), atol=1e-5)
    levels = (8, 5, 5, 5, 5, 5)
    q = FSQ(QuantizerConfig(kind="fsq", levels=levels, code_dim=6, codebook_size=8 * 5 ** 5))(z)
    half_steps = torch.tensor([0.5 / (n // 2) for n in levels])  # rounding moves each digit half a step at most
    assert q.distance.shape == q.indices.shape and (q.distance <= half_steps.norm() + 1e-6).all()
    assert q.distance.max() > 0


def test_kl_samples_in_training_takes_the_mean_in_eval_and_weighs_its_kl() -> None:
    torch.manual_seed(0)
    kl = ContinuousBottleneck(QuantizerConfig(kind="kl", code_dim=4, kl_weight=0.5))
    mean, logvar = torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5) - 1
    z = torch.cat([mean, logvar], dim=1).requires_grad_()
    expected = 0.5 * 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(1).mean()  # weight x KL per token
    kl.eval()
    q = kl(z)
    assert q.indices is None and q.distance is None and not q.discrete
    assert torch.allclose(q.z_q, mean) and torch.allclose(q.kl_loss, expected, atol=1e-6)
    kl.train()
    a, b = kl(z), kl(z)
    assert a.z_q.shape == mean.shape and not torch.allclose(a.z_q, b.z_q)  # a fresh sample each call
    noise = ((a.z_q - mean) / (0.5 * logvar).exp()).detach()
    assert 0.8 < float(noise.std()) < 1.2 and abs(float(noise.mean())) < 0.2  # reparameterised N(mean, var)
    (a.z_q.sum() + a.kl_loss).backward()
    assert z.grad[:, :4].abs().sum() > 0 and z.grad[:, 4:].abs().sum() > 0  # mean and variance both learn
    prior = torch.zeros(1, 8, 2)  # N(0, I) itself costs nothing
    assert float(kl(prior).kl_loss) == 0.0


def test_continuous_tokens_are_normalised_per_token_and_keep_their_direction() -> None:
    z = torch.randn(2, 6, 10) * 5 + 3
    q = ContinuousBottleneck(QuantizerConfig(kind="continuous", code_dim=6))(z)
    assert q.indices is None and float(q.kl_loss) == 0.0 and q.z_q.shape == z.shape
    assert torch.allclose(q.z_q.mean(1), torch.zeros(2, 10), atol=1e-5)
    assert torch.allclose(q.z_q.var(1, unbiased=False), torch.ones(2, 10), atol=1e-3)
    centred = z - z.mean(1, keepdim=True)
    assert torch.allclose(torch.nn.functional.cosine_similarity(q.z_q, centred, dim=1), torch.ones(2, 10), atol=1e-5)
    stats = bottleneck_stats([q], QuantizerConfig(kind="continuous", code_dim=6))
    assert stats == pytest.approx({"latent_std": 1.0, "latent_channel_var": float(
        q.z_q.movedim(1, -1).reshape(-1, 6).var(0).mean())}, abs=1e-2)


@pytest.mark.parametrize("config", ["tiny", "gigatok-tiny", "titok-tiny"])
@pytest.mark.parametrize("args", [FSQ_ARGS, LFQ_ARGS, ("--quantizer.rotation_trick", "true"), KL_ARGS,
                                  CONTINUOUS_ARGS], ids=["fsq", "lfq", "vq-rotation", "kl", "continuous"])
def test_every_family_takes_every_quantizer(config: str, args: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    cfg = load_config(config, list(args))
    model = build_tokenizer(cfg)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, q = model(x)
    (recon.square().mean() + q.codebook_loss + q.commit_loss + q.kl_loss).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert q.z_q.shape[1] == cfg.quantizer.code_dim
    assert (float(q.kl_loss.detach()) > 0) == (cfg.quantizer.kind == "kl")
    model.eval()
    with torch.no_grad():
        recon, q = model(x)
        assert torch.equal(model(x)[0], recon)  # deterministic in eval (kl: the mean, not a sample)
        assert torch.allclose(model.decode(q.z_q), recon, atol=1e-5)
    stats = bottleneck_stats([q], cfg.quantizer)
    if not q.discrete:
        assert set(stats) == {"latent_std", "latent_channel_var"}
        return
    assert 0 < stats["codebook_usage"] <= 1 and stats["perplexity"] >= 1
    with torch.no_grad():
        assert torch.allclose(model.decode_indices(q.indices), recon, atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (("--quantizer.kind", "fsq", "--quantizer.levels", "[8, 5, 5]", "--quantizer.code_dim", "3"),
     r"quantizer\.codebook_size: fsq levels \[8, 5, 5\] give 200 codes, got 512"),
    (("--quantizer.kind", "fsq", "--quantizer.levels", "[8, 5]", "--quantizer.codebook_size", "40"),
     r"quantizer\.code_dim: fsq with 2 levels has code_dim 2, got 8"),
    (("--quantizer.kind", "lfq", "--quantizer.code_dim", "6"),
     r"quantizer\.codebook_size: lfq with quantizer\.code_dim 6 has 64 codes, got 512"),
    (FSQ_ARGS + ("--loss.entropy_weight", "0.1"), r"loss\.entropy_weight: must be 0 with quantizer\.kind 'fsq'"),
    (KL_ARGS + ("--loss.entropy_weight", "0.1"), r"loss\.entropy_weight: must be 0 with quantizer\.kind 'kl'"),
    (("--quantizer.kind", "kl", "--quantizer.kl_weight", "-1"), r"quantizer\.kl_weight: must be >= 0, got -1"),
    (("--quantizer.kind", "vae"),
     r"quantizer\.kind: unknown quantizer 'vae' \(known: vq, fsq, lfq, kl, continuous\)"),
])
def test_quantizer_settings_that_disagree_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("gigatok-tiny", list(args))


def _entropy_rank(rank: int, world: int, init_file: str, sq_dist: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mine = sq_dist.chunk(world)[rank].clone().requires_grad_()
        loss = entropy_loss(mine, 0.5)
        loss.backward()
        out[rank] = (float(loss), mine.grad)
    finally:
        dist.destroy_process_group()


def test_entropy_loss_uses_the_global_batch_under_torch_distributed(tmp_path) -> None:
    """Two gloo ranks with half a batch each: the mean of their losses is the whole batch's loss, and their
    gradients, averaged as data parallelism averages them, are the whole batch's."""
    torch.manual_seed(0)
    sq_dist = torch.rand(8, 16) * 4
    full = sq_dist.clone().requires_grad_()
    expected = entropy_loss(full, 0.5)
    expected.backward()
    out = mp.Manager().dict()
    mp.spawn(_entropy_rank, args=(2, str(tmp_path / "init"), sq_dist, out), nprocs=2)
    assert (out[0][0] + out[1][0]) / 2 == pytest.approx(float(expected.detach()), abs=1e-6)
    grads = torch.cat([out[0][1], out[1][1]]) / 2  # each rank's gradient, divided by the world size
    assert torch.allclose(grads, full.grad, atol=1e-6)
    single = entropy_loss(sq_dist.chunk(2)[0], 0.5)  # what one rank would compute on its own
    assert abs(float(single) - out[0][0]) > 1e-3


def _train_codebook(entropy_weight: float, seed: int) -> float:
    """Codebook usage after fitting a VQ to fixed unit vectors on one side of the sphere, every code starting in
    a narrow cap on the other side: only the codes on the cap's rim are ever nearest, so plain VQ moves those
    and the rest stay dead."""
    torch.manual_seed(seed)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=64, code_dim=8))
    data = cap_vectors(4096, 8)
    start_in_cap(vq)
    fit_codebooks(vq, data, entropy_weight)
    with torch.no_grad():
        return vq(data[:, :, None]).usage(64)[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_entropy_loss_raises_codebook_usage_where_plain_vq_collapses(seed: int) -> None:
    plain, with_entropy = _train_codebook(0.0, seed), _train_codebook(0.1, seed)  # GigaTok's temperature 0.01
    assert plain < 0.6, plain  # about half the codebook never used
    assert with_entropy > 0.85 and with_entropy > plain + 0.3, (plain, with_entropy)


def test_vq_straight_through_and_losses() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(codebook_size=16, code_dim=4, beta=0.25))
    vq.reset_parameters()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    assert out.indices.shape == (2, 3, 3)
    codes = torch.nn.functional.normalize(vq.codebook.weight, dim=-1)
    assert torch.allclose(out.z_q.permute(0, 2, 3, 1).reshape(-1, 4), codes[out.indices.flatten()], atol=1e-6)
    out.z_q.sum().backward()  # straight-through: the encoder output receives gradient
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert float(out.commit_loss) == pytest.approx(0.25 * float(out.codebook_loss), rel=1e-5)
    assert torch.allclose(vq.lookup(out.indices), out.z_q.detach(), atol=1e-6)  # ST adds float rounding only


def test_codebook_stats_and_entropy_loss_extremes() -> None:
    usage, perplexity = codebook_stats(torch.arange(8), 8)
    assert usage == 1.0 and perplexity == pytest.approx(8.0)
    usage, perplexity = codebook_stats(torch.zeros(8, dtype=torch.long), 8)
    assert usage == 1 / 8 and perplexity == pytest.approx(1.0)
    # Confident, spread assignments minimise the entropy loss; collapsed or uncertain ones do not.
    spread = torch.full((8, 8), 10.0).fill_diagonal_(0.0)
    collapsed = torch.full((8, 8), 10.0)
    collapsed[:, 0] = 0.0
    uniform = torch.zeros(8, 8)
    assert entropy_loss(spread, 0.1) < entropy_loss(collapsed, 0.1)
    assert entropy_loss(spread, 0.1) < entropy_loss(uniform, 0.1)
