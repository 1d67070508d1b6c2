"""TiTok-style 1D ViT tokenizer: shapes, presets on the meta device, and a CPU training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling.core.config import ConfigError
from scaling.models.factory import load_config
from scaling.models.factory import build_tokenizer, parameter_counts
from scaling.models.titok import TITOK_SIZES
from tests.helpers import history, run_cli, tiny_args

PRESETS = {"titok-s-128": ("S", 128), "titok-b-64": ("B", 64), "titok-l-32": ("L", 32)}


def test_forward_gives_k_tokens_and_every_part_learns() -> None:
    torch.manual_seed(0)
    model = build_tokenizer(load_config("titok-tiny"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, q = model(x)
    assert recon.shape == x.shape and q.indices.shape == (2, 16)  # K = 16, whatever the patch grid
    (recon.square().mean() + q.codebook_loss + q.commit_loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_on_meta_with_titok_vits(preset: str) -> None:
    cfg = load_config(preset)
    with torch.device("meta"):
        model = build_tokenizer(cfg)
    assert all(p.is_meta for p in model.parameters())
    size, tokens = PRESETS[preset]
    width, layers, _ = TITOK_SIZES[size]
    assert (cfg.model.num_tokens, cfg.model.patch_size, cfg.data.image_size) == (tokens, 16, 256)
    assert len(model.encoder.transformer.layers) == len(model.decoder.transformer.layers) == layers
    counts = parameter_counts(model)
    parts = ("encoder_transformer", "quantizer", "decoder_transformer")
    assert sum(counts[f"params_{k}"] for k in parts) == counts["params_total"]
    # a pre-norm block is 12 w^2 weights; the rest (patch projection, embeddings, norms, biases) is under 3%
    assert counts["params_encoder_transformer"] == pytest.approx(12 * width ** 2 * layers, rel=0.03)
    assert counts["params_quantizer"] == 4096 * 12


def test_titok_s_has_eight_layers_unlike_gigatok_s() -> None:
    assert TITOK_SIZES["S"] == (512, 8, 8) and TITOK_SIZES["B"] == (768, 12, 12) and TITOK_SIZES["L"] == (1024, 24, 16)


def test_image_size_must_be_whole_patches() -> None:
    with pytest.raises(ConfigError, match=r"data\.image_size: 32 is not divisible by the model's downsampling "
                                          r"factor 5 \(model\.patch_size\)"):
        load_config("titok-tiny", ["--model.patch_size", "5"])


@pytest.mark.slow
def test_tiny_titok_reconstruction_falls(synth_data: Path, tmp_path: Path, mlflow_uri: str) -> None:
    args = tiny_args(synth_data, tmp_path / "run", mlflow_uri, **{
        "train.steps": 150, "train.batch_size": 16, "train.val_every": 75, "train.ckpt_every": 150,
        "optim.warmup_steps": 10})
    proc = run_cli("train", "titok-tiny", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, val = history(mlflow_uri, "val/recon_loss")
    assert val[0] > val[75] > val[150] and val[150] < 0.25 * val[0], val
    assert run.data.params["model.family"] == "titok" and run.data.params["params_encoder_cnn"] == "0"
