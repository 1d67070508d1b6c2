"""LPIPS, PatchGAN and every loss in one training run, with random-initialised stand-ins for pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling.cli import main
from scaling.core.errors import UserError
from scaling.losses.gan import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from scaling.losses.perceptual import PerceptualLoss
from tests.helpers import tiny_args


def test_lpips_from_local_files_is_a_distance(random_vgg: Path) -> None:
    lpips = PerceptualLoss(str(random_vgg))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_()
    assert float(lpips(x, x)) == pytest.approx(0.0, abs=1e-6)
    d = lpips(x, y)
    assert float(d.detach()) > 0
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
             "train.batch_size": 4, "train.log_every": 1, "optim.warmup_steps": 0, "optim.schedule": "wsd",
             "data.val_samples": 8}  # the assertions are on training losses: validation needs few images
    assert main(["train", "tiny", *tiny_args(synth_data, tmp_path / "run", mlflow_uri, **extra)]) == 0
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id])
    assert {"train/perceptual", "train/gan", "train/disc", "train/entropy"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/gan")] == [3, 4]  # on from step 2


def test_patchgan_hinge_losses() -> None:
    disc = PatchDiscriminator(layers=2, channels=8)
    logits = disc(torch.randn(2, 3, 32, 32))
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] > 1  # a map of patch logits
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0
    assert float(hinge_g_loss(torch.full((4,), 3.0))) == -3.0
