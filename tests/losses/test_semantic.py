"""Semantic regularisation against a frozen timm ViT read from a local file.

The teacher here is a random-initialised ``vit_tiny_patch16_224`` saved to a temporary file: it proves only
the mechanism (loading, resizing, grid resampling, gradients into the tokenizer, logging), not that
DINOv2 features make better tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from scaling.core.config import LossConfig
from scaling.core.errors import UserError
from scaling.losses.semantic import SemanticLoss
from scaling.models.backbones import resample_tokens
from tests.helpers import TINY_VIT, run_cli, run_main, tiny_args

TEACHER = TINY_VIT


@pytest.fixture
def random_teacher(random_vit: Path) -> Path:
    return random_vit


def semantic_cfg(weights: Path | str, size: int = 64) -> LossConfig:
    return LossConfig(semantic_weight=1.0, semantic_teacher=TEACHER, semantic_teacher_weights=str(weights),
                      semantic_teacher_size=size)


def test_teacher_gives_frozen_patch_features_at_its_size(random_teacher: Path) -> None:
    loss = SemanticLoss(semantic_cfg(random_teacher, size=64))  # 64 / 16 = a 4x4 patch grid
    x = torch.rand(2, 3, 32, 32) * 2 - 1  # resized up to 64 for the teacher
    assert loss.targets(x).shape == (2, 16, 192)  # class token dropped
    student = torch.randn(2, 64, 192, requires_grad=True)  # an 8x8 grid, resampled to 4x4
    value, cos = loss(student, x)
    value.backward()
    assert float(value.detach()) == pytest.approx(-float(cos)) and student.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training  # stays in eval mode


def test_resampling_keeps_a_constant_grid_and_matching_grids_untouched() -> None:
    tokens = torch.randn(1, 1, 5).expand(1, 64, 5)  # the same vector at every cell of an 8x8 grid
    assert torch.allclose(resample_tokens(tokens, 4), tokens[:, :16], atol=1e-6)
    assert resample_tokens(tokens, 8) is tokens


def _train(synth_data: Path, run_dir: Path, uri: str, **extra: object):
    return run_cli("train", "gigatok-tiny", *tiny_args(synth_data, run_dir, uri, **extra))


def _train_here(capsys: pytest.CaptureFixture, synth_data: Path, run_dir: Path, uri: str, **extra: object):
    """``_train`` in this process, for a run that must stop before training."""
    return run_main(capsys, "train", "gigatok-tiny", *tiny_args(synth_data, run_dir, uri, **extra))


@pytest.mark.slow
def test_semantic_regularisation_raises_teacher_student_cosine(random_teacher: Path, synth_data: Path,
                                                             tmp_path: Path, mlflow_uri: str) -> None:
    proc = _train(synth_data, tmp_path / "run", mlflow_uri, **{
        "loss.semantic_weight": 1.0, "loss.semantic_teacher": TEACHER,
        "loss.semantic_teacher_weights": str(random_teacher), "loss.semantic_teacher_size": 64,
        "train.steps": 30, "train.batch_size": 16, "train.log_every": 1, "train.val_every": 30,
        "train.ckpt_every": 30, "optim.warmup_steps": 5})
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id])
    cos = [m.value for m in client.get_metric_history(run.info.run_id, "train/semantic_cos")]
    assert len(cos) == 30 and sum(cos[-5:]) / 5 > cos[0] + 0.3, cos  # step 1: the untrained MLP
    assert int(run.data.params["params_semantic_mlp"]) == 64 * 256 + 256 * 256 + 256 * 192 + 256 + 256 + 192


def test_missing_teacher_file_fails_before_the_run_directory(synth_data: Path, tmp_path: Path, mlflow_uri: str,
                                                             capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "weights" / "dinov2.safetensors"
    proc = _train_here(capsys, synth_data, tmp_path / "run", mlflow_uri, **{
        "loss.semantic_weight": 0.5, "loss.semantic_teacher_weights": str(missing)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"scaling: error: loss.semantic_teacher_weights: weight file {missing} not found"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, content, message", [
    (TEACHER, b"\x00" * 64, "not a readable weight file"),
    ("vit_small_patch16_224", None, "size mismatch"),  # the tiny teacher's weights in a small ViT
], ids=["garbage", "other-architecture"])
def test_wrong_teacher_file_is_one_line_error(name: str, content: bytes | None, message: str,
                                              random_teacher: Path, tmp_path: Path) -> None:
    path = random_teacher
    if content is not None:
        path = tmp_path / "garbage.pth"
        path.write_bytes(content)
    cfg = semantic_cfg(path)
    cfg.semantic_teacher = name
    with pytest.raises(UserError, match=f"loss.semantic_teacher_weights: {path} does not load into {name}") as e:
        SemanticLoss(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_teacher_name_suggests_one() -> None:
    with pytest.raises(UserError, match=r"loss\.semantic_teacher: 'vit_tiny_patch16_24' is not a timm model "
                                        r"\(did you mean 'vit_tiny_patch16_224'\?\)"):
        SemanticLoss(LossConfig(semantic_weight=1.0, semantic_teacher="vit_tiny_patch16_24",
                                semantic_teacher_weights="unused.pth"))
