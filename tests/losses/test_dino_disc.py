"""DINO discriminator: a frozen timm ViT (a random stand-in from a local file: the mechanism only) with
trainable heads, DiffAug on its inputs, and its place in training as ``loss.disc_kind = "dino"``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling.core.config import ConfigError, LossConfig
from scaling.models.factory import load_config
from scaling.core.errors import UserError
from scaling.losses.dino_disc import _cutout, _translate, diff_augment
from scaling.losses.gan import PatchDiscriminator, build_discriminator, hinge_g_loss
from scaling.core.checkpoint import read_checkpoint
from tests.helpers import TINY_VIT, history, run_cli, tiny_args


def dino_cfg(weights: Path | str) -> LossConfig:
    return LossConfig(disc_kind="dino", disc_backbone=TINY_VIT, disc_backbone_weights=str(weights),
                      disc_backbone_size=32)


def test_heads_learn_and_the_frozen_backbone_gets_no_gradient(random_vit: Path) -> None:
    torch.manual_seed(0)
    disc = build_discriminator(dino_cfg(random_vit)).train()
    assert disc.taps == [2, 5, 8, 11] and not disc.backbone.training  # 12 blocks: heads on four of them
    backbone = {k: v.clone() for k, v in disc.backbone.state_dict().items()}
    real, fake = torch.rand(4, 3, 32, 32) * 2 - 1, (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_()
    logits = disc(real)
    assert logits.shape == (4, 1, 4 * 4)  # four heads x a 2x2 token grid
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-2)
    ((logits - 1).square().mean() + (disc(fake) + 1).square().mean()).backward()  # least squares: no dead units
    assert all(p.grad is None for p in disc.backbone.parameters())
    assert not [n for n, p in disc.heads.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert fake.grad.abs().sum() > 0  # the generator's gradient passes through the frozen backbone
    opt.step()
    assert all(torch.equal(v, disc.backbone.state_dict()[k]) for k, v in backbone.items())
    fake.grad = None
    hinge_g_loss(disc(fake)).backward()
    assert fake.grad.abs().sum() > 0


def test_no_augmentation_in_eval_mode(random_vit: Path) -> None:
    disc = build_discriminator(dino_cfg(random_vit)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(disc(x), disc(x))
    disc.train()
    assert not torch.allclose(disc(x), disc(x))  # a fresh augmentation per call


def test_diffaug_is_differentiable_and_changes_every_image() -> None:
    torch.manual_seed(0)
    x = (torch.rand(16, 3, 32, 32) * 2 - 1).requires_grad_()
    y = diff_augment(x)
    assert y.shape == x.shape and ((y - x).flatten(1).abs().amax(1) > 0.1).all()
    y.square().sum().backward()
    assert x.grad.abs().sum() > 0


def test_translation_shifts_whole_pixels_within_an_eighth() -> None:
    torch.manual_seed(0)
    x = (torch.arange(32 * 32, dtype=torch.float32) + 1).view(1, 1, 32, 32).repeat(16, 1, 1, 1)
    y = _translate(x, 0.125)
    for image in y[:, 0]:
        src = int(image[16, 16]) - 1  # unique values: where the centre pixel came from
        dy, dx = 16 - src // 32, 16 - src % 32
        assert abs(dy) <= 4 and abs(dx) <= 4
        expected = torch.roll(x[0, 0], (dy, dx), (0, 1))
        rows, cols = torch.arange(32)[:, None] - dy, torch.arange(32)[None, :] - dx
        inside = (rows >= 0) & (rows < 32) & (cols >= 0) & (cols < 32)
        assert torch.equal(image, torch.where(inside, expected, torch.zeros(())))


def test_cutout_zeroes_one_square_of_half_the_side() -> None:
    torch.manual_seed(0)
    y = _cutout(torch.ones(64, 3, 32, 32), 0.5)
    zeroed = (y[:, 0] == 0).float()
    assert torch.equal(zeroed, (y == 0).float().mean(1))  # the same square in every channel
    assert (zeroed.sum((1, 2)) <= 16 * 16).all() and (zeroed.sum((1, 2)) > 0).all()
    assert zeroed.sum((1, 2)).max() == 16 * 16  # whole squares where they fit in the image
    rows, cols = zeroed.amax(2).sum(1), zeroed.amax(1).sum(1)
    assert torch.equal(zeroed.sum((1, 2)), rows * cols)  # a rectangle (a square cut by the border)


def test_patchgan_stays_the_default() -> None:
    assert isinstance(build_discriminator(LossConfig()), PatchDiscriminator)


def test_missing_backbone_file_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "dino_vits16.safetensors"
    with pytest.raises(UserError) as e:
        build_discriminator(dino_cfg(missing))
    assert str(e.value) == f"loss.disc_backbone_weights: weight file {missing} not found"


@pytest.mark.parametrize("overrides, message", [
    (["--loss.disc_kind", "stylegan"], r"loss\.disc_kind: must be 'patchgan' or 'dino', got 'stylegan'"),
    (["--loss.disc_kind", "dino", "--loss.gan_weight", "0.1"],
     r"loss\.disc_backbone_weights: required when loss\.disc_kind is 'dino'"),
])
def test_bad_disc_settings_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


@pytest.mark.slow
def test_tiny_trains_against_the_dino_discriminator(random_vit: Path, synth_data: Path,
                                                     tmp_path: Path, mlflow_uri: str) -> None:
    args = tiny_args(synth_data, tmp_path / "run", mlflow_uri, **{
        "loss.gan_weight": 0.1, "loss.gan_start": 0, "loss.disc_kind": "dino", "loss.disc_backbone": TINY_VIT,
        "loss.disc_backbone_weights": str(random_vit), "loss.disc_backbone_size": 32,
        "train.steps": 10, "train.batch_size": 8, "train.log_every": 1, "train.val_every": 10,
        "train.ckpt_every": 10, "optim.warmup_steps": 2})
    proc = run_cli("train", "tiny", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, disc = history(mlflow_uri, "train/disc")
    _, gan = history(mlflow_uri, "train/gan")
    assert len(disc) == len(gan) == 10
    assert all(torch.isfinite(torch.tensor(list(disc.values()) + list(gan.values()))))
    state = read_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000010")
    assert any(k.startswith("heads.") for k in state["disc"])
