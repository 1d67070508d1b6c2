"""Losses and quantiser mechanics, with random-initialised stand-ins for pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from scaling.cli import main
from scaling.core.config import QuantizerConfig
from scaling.core.errors import UserError
from scaling.losses.gan import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from scaling.losses.perceptual import PerceptualLoss
from scaling.models.quantizers import VectorQuantizer, codebook_stats, entropy_loss
from tests.conftest import tiny_args


@pytest.fixture(scope="module")
def random_vgg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised stand-in for torchvision's VGG16 weights (features only, as LPIPS uses)."""
    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.vgg16().state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.pth"
    torch.save(state, path)
    return path


def test_lpips_from_local_files_is_a_distance(random_vgg: Path) -> None:
    lpips = PerceptualLoss(str(random_vgg))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_()
    assert float(lpips(x, x)) == pytest.approx(0.0, abs=1e-6)
    d = lpips(x, y)
    assert float(d) > 0
    d.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips.parameters())  # frozen


def test_lpips_rejects_missing_and_wrong_files(random_vgg: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"loss\.vgg_weights: weight file .*missing\.pth not found"):
        PerceptualLoss(str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match="is not a torchvision VGG16 state dict"):
        PerceptualLoss(str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="cannot be read"):
        PerceptualLoss(str(garbage))
    with pytest.raises(UserError, match=r"loss\.lpips_weights: .*lacks lin0"):
        PerceptualLoss(str(random_vgg), str(random_vgg))


def test_training_with_every_loss_on(random_vgg: Path, synth_data: Path, tmp_path: Path, mlflow_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    extra = {"loss.perceptual_weight": 1.0, "loss.vgg_weights": str(random_vgg), "loss.gan_weight": 0.5,
             "loss.gan_start": 2, "loss.entropy_weight": 0.01, "loss.recon": "l1", "train.steps": 4,
             "train.batch_size": 4, "train.log_every": 1, "optim.warmup_steps": 0, "optim.schedule": "wsd"}
    assert main(["train", "tiny", *tiny_args(synth_data, tmp_path / "run", mlflow_uri, **extra)]) == 0
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id])
    assert {"train/perceptual", "train/gan", "train/disc", "train/entropy"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/gan")] == [3, 4]  # on from step 2


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


def test_patchgan_hinge_losses() -> None:
    disc = PatchDiscriminator(layers=2, channels=8)
    logits = disc(torch.randn(2, 3, 32, 32))
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] > 1  # a map of patch logits
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0
    assert float(hinge_g_loss(torch.full((4,), 3.0))) == -3.0
