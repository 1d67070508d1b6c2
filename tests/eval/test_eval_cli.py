"""``scaling eval RUN`` on a short tiny training run (conftest's ``ema_run``): metrics in the run's MLflow run at
the checkpoint's step, metrics.json, the grid and the histogram; the weights it evaluates; bad input stops before
any work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling.models.factory import load_config
from scaling.core.errors import UserError
from scaling.eval.reconstruction import load_tokenizer, prepare, reconstruct
from scaling.losses.perceptual import PerceptualLoss
from scaling.models.factory import build_tokenizer
from scaling.core.checkpoint import read_checkpoint
from tests.helpers import run_cli

KEYS = ("eval/rfid", "eval/psnr", "eval/ssim", "eval/codebook_usage", "eval/perplexity", "eval/code_distance_mean",
        "eval/code_distance_p95")


@pytest.mark.slow
@pytest.mark.xdist_group("ema_run")
def test_eval_logs_to_the_runs_mlflow_run(ema_run: tuple[Path, str], random_inception: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    run, uri = ema_run
    result = run_cli("eval", str(run), "--eval.inception_weights", str(random_inception), "--eval.num_images", "10",
                     "--eval.batch_size", "5", "--eval.stats_cache", str(tmp_path / "fid"))
    assert result.returncode == 0, result.stderr
    assert "eval/rfid" in result.stdout and "eval/lpips" in result.stdout  # the table, LPIPS noted as skipped

    out = run / "eval" / "step-00000020"
    record = json.loads((out / "metrics.json").read_text())
    assert record["step"] == 20 and record["ema"] is True and "lpips" in record
    metrics = record["metrics"]
    assert metrics["eval/num_images"] == 10 and 0 < metrics["eval/codebook_usage"] <= 1
    assert metrics["eval/rfid"] > 0 and metrics["eval/perplexity"] >= 1
    # Its compute: per image the tokenizer's forward (as `scaling plan` counts it) and Inception-v3's (11.4 GFLOPs
    # at 299x299), times the images
    from scaling.core.config import read_config
    from scaling.plan.count import plan

    forward = plan(read_config(str(run / "config.toml"))).flops_forward
    assert 10 * (forward + 1.1e10) < metrics["eval/flops"] < 10 * (forward + 1.2e10)
    assert (out / "reconstructions.png").stat().st_size and (out / "code_distances.png").stat().st_size

    client = MlflowClient(uri)
    run_id = (run / "mlflow_run_id").read_text().strip()
    for key in KEYS:
        (point,) = client.get_metric_history(run_id, key)
        assert point.step == 20 and point.value == pytest.approx(metrics[key])
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "eval/step-00000020")}
    assert logged == {"metrics.json", "reconstructions.png", "code_distances.png"}
    assert client.get_run(run_id).info.status == "FINISHED"  # left as training left it
    # How it was measured, in the record and as the run's tags (what the analysis compares across runs)
    how = record["provenance"]
    assert (how["fid_features"], how["fid_reference_images"], how["image_size"], how["step"], how["ema"]) == \
        ("inception-v3-compat/2048", "10", "32", "20", "true")
    assert (tmp_path / "fid" / f"val-{how['fid_reference']}.npz").is_file()
    tags = client.get_run(run_id).data.tags
    assert {k.removeprefix("provenance/eval/"): v for k, v in tags.items() if k.startswith("provenance/eval/")} == how


@pytest.mark.slow
@pytest.mark.xdist_group("ema_run")
@pytest.mark.parametrize("ema", [True, False])
def test_evaluates_the_checkpoints_weights(ema_run: tuple[Path, str], random_inception: Path, ema: bool) -> None:
    run, _ = ema_run
    target = prepare(run, ["--eval.inception_weights", str(random_inception)], step=10, ema=ema)
    assert target.step == 10 and target.prefix == ("eval" if ema else "eval_raw")
    assert target.out_dir == run / "eval" / ("step-00000010" if ema else "step-00000010-raw")
    model = load_tokenizer(target, torch.device("cpu"))
    expected = read_checkpoint(run / "checkpoints" / "step-00000010")["ema" if ema else "model"]
    for name, p in model.named_parameters():
        assert torch.equal(p, expected[name]), name


@pytest.mark.slow
@pytest.mark.xdist_group("ema_run")
def test_bad_input_stops_before_any_work(ema_run: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = ema_run
    missing = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    before = sorted(run.rglob("*"))
    result = run_cli("eval", str(run), "--eval.inception_weights", str(missing))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"scaling: error: eval.inception_weights: weight file {missing} "
                                                  "not found"]
    assert sorted(run.rglob("*")) == before  # nothing written: no eval/ directory (or its step) created

    with pytest.raises(UserError, match=r"^model.base_channels: cannot change a trained run here \(allowed: eval.\)"):
        prepare(run, ["--model.base_channels", "8"], None, True)
    with pytest.raises(UserError, match=r"^--step: .* has no checkpoint at step 7 \(it has 10, 20\)"):
        prepare(run, ["--eval.inception_weights", str(Path(__file__))], 7, True)


@pytest.mark.parametrize("config, tokens", [("tiny", 64), ("gigatok-tiny", 32), ("titok-tiny", 16),
                                            ("tokenflow-tiny", 64)])
def test_every_family_reconstructs(config: str, tokens: int, synth_data: Path, random_vgg: Path,
                                   tmp_path: Path) -> None:
    """One pass over the split for each family (random weights; Inception replaced by zeros: the metrics here are
    the pass's bookkeeping), LPIPS when the config names VGG weights."""
    cfg = load_config(config, {"data": {"train": str(synth_data / "train"), "val": str(synth_data / "val")},
                               "train": {"run_dir": str(tmp_path)}, "eval": {"num_images": 6, "batch_size": 4}})
    torch.manual_seed(0)
    model = build_tokenizer(cfg).eval()
    perceptual = PerceptualLoss(str(random_vgg)) if config == "tiny" else None
    metrics, extras = reconstruct(model, cfg, lambda x: np.zeros((len(x), 2048)), perceptual, torch.device("cpu"))
    assert metrics["num_images"] == 6 and extras["features"].shape == (6, 2048)
    assert len(extras["distances"]) == 6 * tokens and (extras["distances"] > 0).all()
    assert 0 < metrics["codebook_usage"] <= 1 and 1 <= metrics["perplexity"] <= 6 * tokens
    assert 0 < metrics["psnr"] < 100 and -1 <= metrics["ssim"] <= 1
    assert ("lpips" in metrics) == (perceptual is not None) and metrics.get("lpips", 1) > 0
    originals, recons = extras["first"]
    assert originals.shape == recons.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("config, kind", [("tiny", "kl"), ("gigatok-tiny", "continuous")])
def test_continuous_tokens_report_their_scale_not_codes(config: str, kind: str, synth_data: Path,
                                                         tmp_path: Path) -> None:
    cfg = load_config(config, {"data": {"train": str(synth_data / "train"), "val": str(synth_data / "val")},
                               "train": {"run_dir": str(tmp_path)}, "eval": {"num_images": 6, "batch_size": 4},
                               "quantizer": {"kind": kind}, "loss": {"entropy_weight": 0.0}})
    torch.manual_seed(0)
    model = build_tokenizer(cfg).eval()
    metrics, extras = reconstruct(model, cfg, lambda x: np.zeros((len(x), 2048)), None, torch.device("cpu"))
    assert extras["distances"] is None and not any(k.startswith(("codebook", "perplexity", "code_")) for k in metrics)
    assert metrics["latent_std"] > 0 and metrics["latent_channel_var"] > 0 and 0 < metrics["psnr"] < 100


def test_nested_dropout_tokenizers_are_evaluated_at_every_prefix_length(synth_data: Path, tmp_path: Path) -> None:
    """A 1D tokenizer trained with nested dropout reports PSNR for the first 1, 2, 4, ... tokens alone."""
    overrides = {"data": {"train": str(synth_data / "train"), "val": str(synth_data / "val")},
                 "train": {"run_dir": str(tmp_path)}, "eval": {"num_images": 6, "batch_size": 4}}
    no_features = lambda x: np.zeros((len(x), 2048))  # noqa: E731
    cfg = load_config("titok-tiny", overrides | {"model": {"nested_dropout": True}})
    torch.manual_seed(0)
    model = build_tokenizer(cfg).eval()
    metrics, extras = reconstruct(model, cfg, no_features, None, torch.device("cpu"))
    n = cfg.model.num_tokens
    keeps = [k for k in (1, 2, 4, 8, 16, 32, 64) if k < n]
    assert sorted(int(k[len("psnr_keep"):]) for k in metrics if re.fullmatch(r"psnr_keep\d+", k)) == keeps
    # against DetailFlow's targets too, the baseline of a coarse-to-fine model, but no rFID against them
    assert all(metrics[f"psnr_keep{k}_target"] != metrics[f"psnr_keep{k}"] for k in keeps)
    assert extras["target_features"] == {}
    # each prefix's FID features, for its rFID (rfid_keepK)
    assert {k: v.shape for k, v in extras["prefix_features"].items()} == {f"keep{k}": (6, 2048) for k in keeps}
    assert len({round(metrics[f"psnr_keep{k}"], 6) for k in keeps} | {round(metrics["psnr"], 6)}) == len(keeps) + 1
    plain = load_config("titok-tiny", overrides)
    metrics, _ = reconstruct(build_tokenizer(plain).eval(), plain, no_features, None, torch.device("cpu"))
    assert not any(k.startswith("psnr_keep") for k in metrics)


def test_coarse_to_fine_prefixes_are_also_measured_against_their_own_targets(synth_data: Path, tmp_path: Path) -> None:
    """DetailFlow: each prefix's PSNR against the whole image and against its degraded target, and the targets'
    features for the prefix's rFID against them; multi-scale quantisation: PSNR per number of scales."""
    overrides = {"data": {"train": str(synth_data / "train"), "val": str(synth_data / "val")},
                 "train": {"run_dir": str(tmp_path)}, "eval": {"num_images": 6, "batch_size": 4}}
    features = lambda x: x.flatten(1)[:, :16].numpy()  # noqa: E731
    cfg = load_config("titok-tiny", overrides | {"model": {"nested_dropout": True, "coarse_to_fine": True}})
    torch.manual_seed(0)
    metrics, extras = reconstruct(build_tokenizer(cfg).eval(), cfg, features, None, torch.device("cpu"))
    keeps = ("keep1", "keep2", "keep4", "keep8")
    assert set(extras["target_features"]) == set(keeps) and extras["target_features"]["keep1"].shape == (6, 16)
    assert all(metrics[f"psnr_{k}_target"] != metrics[f"psnr_{k}"] for k in keeps)
    cfg = load_config("tiny", overrides | {"quantizer": {"scales": [1, 2, 4, 8], "l2_norm": False}})
    metrics, extras = reconstruct(build_tokenizer(cfg).eval(), cfg, features, None, torch.device("cpu"))
    assert sorted(k for k in metrics if k.startswith("psnr_")) == ["psnr_scales1", "psnr_scales2", "psnr_scales3"]
    assert extras["target_features"] == {}
