"""Reconstruction metrics against reference implementations: FID against torch-fidelity's own pipeline on PNG
folders, PSNR and SSIM against scikit-image; the reference statistics' cache."""

from __future__ import annotations

import hashlib

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.utils import save_image

from scaling.core.config import Config
from scaling.models.factory import load_config
from scaling.core.errors import UserError
from scaling.metrics.fid import FIDStats, InceptionFeatures, check_eval, frechet_distance, reference_stats
from scaling.metrics.pixel import psnr, ssim, to_unit

CPU = torch.device("cpu")


def image_set(seed: int, n: int, blur: int) -> torch.Tensor:
    """n random 32x32 images in [-1, 1]; ``blur`` box-filters them, so two sets differ in distribution."""
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    if blur > 1:
        x = torch.nn.functional.avg_pool2d(x, blur, stride=1, padding=blur // 2, count_include_pad=False)[..., :32, :32]
    return x


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir()
    for i, image in enumerate(images):
        save_image(to_unit(image), folder / f"{i:03d}.png")
    return folder


@pytest.mark.slow  # about 30 s: Inception at 299x299 on the CPU, twice
def test_fid_matches_torch_fidelity(random_inception: Path, tmp_path: Path) -> None:
    import torch_fidelity

    a, b = image_set(0, 8, blur=1), image_set(1, 8, blur=5)
    extractor = InceptionFeatures(random_inception, CPU)
    fa, fb = extractor(a), extractor(b)
    assert fa.shape == (8, 2048) and fa.dtype == np.float64
    sa, sb = FIDStats.from_features(fa), FIDStats.from_features(fb)
    assert np.trace(sa.sigma) > 1e-2 and np.trace(sb.sigma) > 1e-2, "random Inception features are degenerate"

    fid = frechet_distance(sa, sb)
    assert fid > 1e-2
    # ~0 up to rounding: relative to the terms that cancel (tr S + tr S - 2 tr sqrt(S S))
    assert abs(frechet_distance(sa, sa)) < 1e-6 * 2 * np.trace(sa.sigma)

    theirs = torch_fidelity.calculate_metrics(
        input1=str(write_pngs(a, tmp_path / "a")), input2=str(write_pngs(b, tmp_path / "b")), fid=True,
        feature_extractor_weights_path=str(random_inception), cuda=False, cache=False, verbose=False,
        save_cpu_ram=True)  # save_cpu_ram: no DataLoader worker processes
    assert fid == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)


def test_psnr_ssim_match_skimage() -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(4, 3, 32, 32, generator=g)).clamp(-1, 1)
    ours_psnr, ours_ssim = psnr(y, x), ssim(y, x)
    for i in range(4):
        xi, yi = to_unit(x[i]).double().numpy(), to_unit(y[i]).double().numpy()
        ref_psnr = peak_signal_noise_ratio(xi, yi, data_range=1)
        ref_ssim = structural_similarity(xi, yi, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1, channel_axis=0)
        assert float(ours_psnr[i]) == pytest.approx(ref_psnr, abs=1e-3)
        assert float(ours_ssim[i]) == pytest.approx(ref_ssim, abs=1e-3)


def eval_config(data: Path, tmp_path: Path, weights: Path | str, **eval_keys: object) -> Config:
    return load_config("tiny", {
        "data": {"train": str(data / "train"), "val": str(data / "val")}, "train": {"run_dir": str(tmp_path / "run")},
        "eval": {"inception_weights": str(weights), "stats_cache": str(tmp_path / "fid"), "batch_size": 4,
                 **eval_keys}})


def test_reference_stats_cached(random_inception: Path, synth_data: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    extractor = InceptionFeatures(random_inception, CPU)
    inner, seen = extractor.model, []
    monkeypatch.setattr(extractor, "model", lambda u8: seen.append(len(u8)) or inner(u8))

    cfg = eval_config(synth_data, tmp_path, random_inception, num_images=6)
    first, how = reference_stats(cfg, extractor)
    assert seen == [4, 2] and first.n == 6
    again, how_again = reference_stats(cfg, extractor)
    assert seen == [4, 2], "cached statistics were recomputed"
    assert np.array_equal(again.mu, first.mu) and np.array_equal(again.sigma, first.sigma)
    assert len(list((tmp_path / "fid").iterdir())) == 1  # one .npz, no temporary file left
    # How an FID against them is measured: the network, its weights' hash, these statistics (their cache file)
    assert how == how_again and how["fid_features"] == InceptionFeatures.name
    assert how["fid_weights_sha256"] == hashlib.sha256(random_inception.read_bytes()).hexdigest()
    assert (tmp_path / "fid" / f"val-{how['fid_reference']}.npz").is_file()
    assert (how["fid_reference_images"], how["image_size"]) == ("6", "32")

    cfg.eval.num_images = 4  # other images: another key
    fewer, how_fewer = reference_stats(cfg, extractor)
    assert fewer.n == 4 and seen == [4, 2, 4] and how_fewer["fid_reference"] != how["fid_reference"]
    assert len(list((tmp_path / "fid").glob("val-*.npz"))) == 2


def test_check_eval_names_the_missing_file(synth_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^eval.inception_weights: required"):
        check_eval(eval_config(synth_data, tmp_path, ""))
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match=rf"^eval.inception_weights: weight file {missing} not found"):
        check_eval(eval_config(synth_data, tmp_path, missing))
