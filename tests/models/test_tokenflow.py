"""TokenFlow-style dual codebook: one shared index, chosen by argmin d_sem + w * d_pix, indexes both codebooks;
the tiny config trains with a semantic decoder against a random stand-in teacher (the mechanism only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scaling.core.config import ConfigError, QuantizerConfig
from scaling.models.factory import build_tokenizer, load_config
from scaling.models.quantizers import DualCodebookVQ
from tests.helpers import TINY_VIT, history, run_cli, tiny_args


def test_one_shared_index_minimises_the_weighted_sum_and_picks_both_codes() -> None:
    torch.manual_seed(0)
    cfg = QuantizerConfig(codebook_size=64, code_dim=4, semantic_code_dim=6, pixel_distance_weight=0.7)
    vq = DualCodebookVQ(cfg)
    vq.reset_parameters()
    z = torch.randn(2, 10, 5, 5)  # 6 semantic then 4 pixel channels
    q = vq(z)
    rows = z.movedim(1, -1).reshape(-1, 10)
    sem, pix = F.normalize(rows[:, :6], dim=1), F.normalize(rows[:, 6:], dim=1)
    code_sem, code_pix = F.normalize(vq.semantic_codebook.weight, dim=1), F.normalize(vq.codebook.weight, dim=1)
    d_sem, d_pix = torch.cdist(sem, code_sem) ** 2, torch.cdist(pix, code_pix) ** 2
    chosen = q.indices.flatten()
    assert torch.equal(chosen, (d_sem + 0.7 * d_pix).argmin(1))
    # a joint choice: neither codebook alone would have chosen it everywhere
    assert (d_sem.argmin(1) != chosen).any() and (d_pix.argmin(1) != chosen).any()
    out = q.z_q.detach().movedim(1, -1).reshape(-1, 10)  # both lookups use the one index
    assert torch.allclose(out[:, :6], code_sem[chosen], atol=1e-5)
    assert torch.allclose(out[:, 6:], code_pix[chosen], atol=1e-5)
    assert torch.allclose(vq.lookup(q.indices), q.z_q.detach(), atol=1e-5)


def test_pixel_weight_moves_the_choice() -> None:
    torch.manual_seed(0)
    z = torch.randn(4, 10, 16)
    picks = []
    for w in (0.0, 100.0):
        vq = DualCodebookVQ(QuantizerConfig(codebook_size=64, code_dim=4, semantic_code_dim=6,
                                            pixel_distance_weight=w))
        torch.manual_seed(1)
        vq.reset_parameters()
        picks.append(vq(z).indices)
    sem_only = torch.cdist(F.normalize(z.movedim(1, -1)[..., :6], dim=-1),
                           F.normalize(vq.semantic_codebook.weight, dim=1)).argmin(-1)
    assert torch.equal(picks[0], sem_only) and not torch.equal(picks[1], sem_only)


def test_ids_alone_reproduce_the_image_and_every_part_learns() -> None:
    torch.manual_seed(0)
    model = build_tokenizer(load_config("tokenflow-tiny", ["--quantizer.rotation_trick", "true"]))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, q = model(x, 0.01)
    assert q.indices.shape == (2, 8, 8) and q.z_q.shape == (2, 16 + 8, 8, 8)
    (recon.square().mean() + q.codebook_loss + q.commit_loss + q.entropy_loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(model.decode_indices(q.indices), recon, atol=1e-4)


def test_tokenflow_needs_vq() -> None:
    with pytest.raises(ConfigError, match=r"quantizer\.kind: model\.family 'tokenflow' needs 'vq'"):
        load_config("tokenflow-tiny", ["--quantizer.kind", "lfq", "--quantizer.code_dim", "6",
                                       "--quantizer.codebook_size", "64"])


@pytest.mark.slow
def test_tiny_tokenflow_trains_both_branches(random_vit: Path, synth_data: Path, tmp_path: Path,
                                            mlflow_uri: str) -> None:
    args = tiny_args(synth_data, tmp_path / "run", mlflow_uri, **{
        "loss.semantic_weight": 1.0, "loss.semantic_teacher": TINY_VIT,
        "loss.semantic_teacher_weights": str(random_vit), "loss.semantic_teacher_size": 64,
        "train.steps": 60, "train.batch_size": 8, "train.log_every": 1, "train.val_every": 30,
        "train.ckpt_every": 60, "optim.warmup_steps": 5})
    proc = run_cli("train", "tokenflow-tiny", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run, val = history(mlflow_uri, "val/recon_loss")
    assert val[0] > val[30] > val[60] and val[60] < 0.5 * val[0], val
    cos = list(history(mlflow_uri, "train/semantic_cos")[1].values())
    assert sum(cos[-5:]) / 5 > cos[0] + 0.2, cos  # the semantic decoder learns the (random) teacher
    params = run.data.params
    assert int(params["params_semantic_mlp"]) > 0 and int(params["params_encoder_transformer"]) > 0


def _teacher_config(random_vit: Path, **extra: str) -> list[str]:
    args = {"model.semantic_encoder": '"teacher"', "loss.semantic_teacher": f'"{TINY_VIT}"',
            "loss.semantic_teacher_weights": f'"{random_vit}"', "loss.semantic_teacher_size": "64", **extra}
    return [x for k, v in args.items() for x in (f"--{k}", v)]


def test_own_semantic_encoder_starts_from_the_teacher_and_trains(random_vit: Path) -> None:
    """TokenFlow's semantic encoder: the teacher's architecture and local weights (a random stand-in here: the
    mechanism only), trainable, its 4x4 patch tokens resampled to the 8x8 CNN grid."""
    from safetensors.torch import load_file

    cfg = load_config("tokenflow-tiny", _teacher_config(random_vit))
    with torch.device("meta"):
        model = build_tokenizer(cfg)  # a meta build reads no file
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        model.init_weights()
    teacher = load_file(str(random_vit))
    vit = model.semantic_encoder.vit.state_dict()
    differ = [k for k in vit if not torch.equal(vit[k], teacher[k])]
    assert differ == ["pos_embed"] and vit["pos_embed"].shape[1] == 1 + 4 * 4  # resampled by timm to 64 px
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, q = model(x)
    assert q.indices.shape == (2, 8, 8)
    (recon.square().mean() + q.codebook_loss + q.commit_loss).backward()
    opt.step()
    assert not torch.equal(model.semantic_encoder.vit.state_dict()["blocks.0.attn.qkv.weight"],
                           teacher["blocks.0.attn.qkv.weight"])  # trained, not frozen


def test_own_semantic_encoder_needs_the_teacher_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^loss\.semantic_teacher_weights: required when model\.semantic_encoder"):
        load_config("tokenflow-tiny", ["--model.semantic_encoder", '"teacher"'])
    cfg = load_config("tokenflow-tiny", _teacher_config(tmp_path / "missing.safetensors"))
    from scaling.core.errors import UserError

    with pytest.raises(UserError, match=r"^loss\.semantic_teacher_weights: weight file .*missing\.safetensors not found"):
        build_tokenizer(cfg)
