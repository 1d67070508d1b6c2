"""float8 training (``parallel.float8``, torchao) of the Transformer blocks' Linear layers: what is converted,
that the converted model computes what the original does within float8's precision, that it trains through
``scaling train`` and exports to a plain model, and the clear error where no float8 GPU is. On the CPU the
casts are emulated (``parallel.float8_emulate``); the speed-up needs an H100/H200 (``benchmarks/``)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torchao.float8.float8_linear import Float8Linear

from scaling.models.factory import load_config
from scaling.parallel.parallelize import apply_float8, float8_targets
from scaling.core.errors import UserError
from scaling.export.generator import load_generator
from scaling.models.factory import build_tokenizer
from scaling.models.transformer import TransformerBlock
from tests.helpers import run_cli, tiny_args

FLOAT8 = {"parallel.float8": True, "parallel.float8_emulate": True}


def tiny_gigatok(data: Path, tmp: Path, **extra: object) -> tuple[nn.Module, object]:
    cfg = load_config("gigatok-tiny", tiny_args(data, tmp / "run", "sqlite://", **extra))
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    with torch.no_grad():
        model.init_weights()
    return model, cfg


def test_float8_converts_the_transformer_linears_and_computes_the_same(synth_data: Path, tmp_path: Path) -> None:
    model, cfg = tiny_gigatok(synth_data, tmp_path, **FLOAT8)
    reference = copy.deepcopy(model)
    targets = {name for name, m in model.named_modules() if m in float8_targets(model)}
    assert apply_float8(model, cfg.parallel) == len(targets) > 0
    converted = {name for name, m in model.named_modules() if isinstance(m, Float8Linear)}
    assert converted == targets
    inside = {f"{name}.{sub}" for name, b in model.named_modules() if isinstance(b, TransformerBlock)
              for sub, _ in b.named_modules() if sub}
    assert converted <= inside  # CNN, stems, projections and the quantiser untouched
    assert any(isinstance(m, nn.Linear) and not isinstance(m, Float8Linear) for m in model.modules())
    assert model.state_dict().keys() == reference.state_dict().keys()  # checkpoints stay interchangeable

    x = torch.rand(4, 3, 32, 32) * 2 - 1
    model.eval(), reference.eval()
    (recon, _), (ref_recon, _) = model(x), reference(x)
    rel = (recon - ref_recon).norm() / ref_recon.norm()
    print(f'relative difference {rel:.4f}')
    assert 0 < rel < 0.2, rel  # float8 rounding (e4m3: 2^-4 relative), not a different function
    recon.square().mean().backward()
    grads = [m.weight.grad for m in model.modules() if isinstance(m, Float8Linear)]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.slow
def test_float8_trains_and_exports_to_a_plain_model(synth_data: Path, tmp_path: Path, mlflow_uri: str) -> None:
    run_dir = tmp_path / "run"
    args = tiny_args(synth_data, run_dir, mlflow_uri, **FLOAT8, **{
        "train.steps": 20, "train.batch_size": 16, "train.val_every": 20, "train.ckpt_every": 20,
        "train.log_every": 10, "optim.warmup_steps": 2})
    proc = run_cli("train", "gigatok-tiny", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_cli("export", str(run_dir), "--out", str(tmp_path / "g.safetensors")).returncode == 0
    model, _ = load_generator(tmp_path / "g.safetensors")
    assert not any(isinstance(m, Float8Linear) for m in model.modules())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_float8_without_a_float8_gpu_is_one_clear_error(synth_data: Path, tmp_path: Path) -> None:
    model, cfg = tiny_gigatok(synth_data, tmp_path, **{"parallel.float8": True})
    with pytest.raises(UserError, match=r"^parallel.float8: needs an NVIDIA GPU of compute capability 8.9 or later"):
        apply_float8(model, cfg.parallel)
