"""FID from Inception-v3 pool features: torch-fidelity's port of the TF Inception that FID is defined with, its
weights from a local file, and its Frechet distance.

``eval.fid_features = "teacher"`` computes the same Frechet distance on the semantic teacher's pooled features
instead (FD-DINOv2 with the default teacher, as Stein et al. 2023 recommend; in the tiny study, the study's own
teacher, since no Inception weights exist there). The metric keys stay ``rfid`` / ``gfid``; the run's
``eval.fid_features`` param says which network they were measured with.

The validation split's reference statistics are computed once and cached as .npz, keyed by everything that
determines them, so every evaluation (``scaling eval``'s rFID, the AR probe's gFID) compares against the same
numbers without recomputing them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from scaling.core.config import Config
from scaling.data.loader import ImageStream, to_float, validation_batches, validation_stream
from scaling.data.mds import verify_split
from scaling.core.errors import UserError, require_file
from scaling.core.run_dir import RunDir
from scaling.metrics.pixel import to_uint8

EXTRACTOR = "inception-v3-compat"  # torch-fidelity's name for the TF-Inception port
FEATURE = "2048"  # pool3 features
DEFAULT_STATS_CACHE = "~/.cache/scaling/fid"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release file


def check_eval(cfg: Config) -> Path:
    """Preflight of anything that computes FID, before any work: the feature network's weight file and the
    validation split (sizes; training verified the hashes). Returns the weight file."""
    verify_split(cfg.data.val, hashes=False)
    if cfg.eval.fid_features == "teacher":
        from scaling.models.backbones import check_timm_name

        check_timm_name(cfg.loss.semantic_teacher)
        if not cfg.loss.semantic_teacher_weights:
            raise UserError("loss.semantic_teacher_weights: required by eval.fid_features = 'teacher' (a local file)")
        return require_file(cfg.loss.semantic_teacher_weights, "loss.semantic_teacher_weights")
    if not cfg.eval.inception_weights:
        raise UserError(f"eval.inception_weights: required, a local weight file (torch-fidelity's {INCEPTION_FILE})")
    return require_file(cfg.eval.inception_weights, "eval.inception_weights")


def feature_extractor(cfg: Config, device: torch.device) -> InceptionFeatures | TeacherFeatures:
    """The network ``eval.fid_features`` names, loaded from its local file."""
    if cfg.eval.fid_features == "teacher":
        return TeacherFeatures(cfg, device)
    return InceptionFeatures(cfg.eval.inception_weights, device)


def file_digest(path: Path) -> str:
    """sha256 of a weight file (part of the reference statistics' cache key)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class InceptionFeatures:
    """Frozen Inception-v3: a batch of [-1, 1] images (N, 3, H, W) -> (N, 2048) float64 pool features.

    Images go in as the uint8 a PNG of them would hold (what torch-fidelity's extractor expects, and what FID
    tools measure from files); the extractor resizes them to 299 itself."""

    name = f"{EXTRACTOR}/{FEATURE}"

    def __init__(self, weights: str | Path, device: torch.device):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights, self.device = Path(weights).expanduser(), device
        try:
            model = FeatureExtractorInceptionV3(EXTRACTOR, [FEATURE], feature_extractor_weights_path=str(self.weights))
        except Exception as e:  # unreadable, or another network's state dict
            raise UserError(f"eval.inception_weights: {self.weights} is not torch-fidelity's Inception state dict "
                            f"({type(e).__name__})") from None
        self.model = model.to(device)

    @cached_property
    def digest(self) -> str:
        return file_digest(self.weights)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        (features,) = self.model(to_uint8(images).to(self.device))
        return features.cpu().double().numpy()


class TeacherFeatures:
    """The frozen semantic teacher (``loss.semantic_teacher*``): [-1, 1] images -> (N, D) float64 pooled features
    (its pre-logits: the class token for a ViT). Images are rounded to uint8 first, as for Inception."""

    def __init__(self, cfg: Config, device: torch.device):
        from scaling.models.backbones import FrozenTimm

        loss = cfg.loss
        self.weights = Path(loss.semantic_teacher_weights).expanduser()
        self.name = f"teacher:{loss.semantic_teacher}@{loss.semantic_teacher_size}"
        self.model = FrozenTimm(loss.semantic_teacher, loss.semantic_teacher_weights, loss.semantic_teacher_size,
                                "loss.semantic_teacher_weights").to(device)
        self.device = device

    @cached_property
    def digest(self) -> str:
        return file_digest(self.weights)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = to_uint8(images).to(self.device).float() / 127.5 - 1
        net = self.model.model
        return net.forward_head(net.forward_features(self.model.prepare(x)), pre_logits=True).cpu().double().numpy()


@dataclass
class FIDStats:
    """Mean and covariance of a set's Inception features, and how many images they summarise."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_features(cls, feats: np.ndarray) -> FIDStats:
        from torch_fidelity.metric_fid import fid_features_to_statistics

        stats = fid_features_to_statistics(torch.from_numpy(np.asarray(feats, dtype=np.float64)))
        return cls(stats["mu"], stats["sigma"], len(feats))

    def save(self, path: Path) -> None:
        """Atomically: written under a temporary name, then renamed, so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as f:
            np.savez(f, mu=self.mu, sigma=self.sigma, n=self.n)
        os.replace(f.name, path)

    @classmethod
    def load(cls, path: Path) -> FIDStats:
        with np.load(path) as z:
            return cls(z["mu"], z["sigma"], int(z["n"]))


def frechet_distance(a: FIDStats, b: FIDStats) -> float:
    """FID between two sets' statistics (torch-fidelity's computation)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    metric = fid_statistics_to_metric({"mu": a.mu, "sigma": a.sigma}, {"mu": b.mu, "sigma": b.sigma}, verbose=False)
    return float(metric[KEY_METRIC_FID])


def eval_split(cfg: Config) -> tuple[ImageStream, int]:
    """The validation split and how many of its first images evaluation uses (``eval.num_images``; 0: all)."""
    dataset = validation_stream(cfg.data, RunDir(cfg.train.run_dir).data_cache)
    return dataset, min(cfg.eval.num_images or len(dataset), len(dataset))


def reference_stats(cfg: Config, extractor: InceptionFeatures | TeacherFeatures) -> tuple[FIDStats, dict[str, str]]:
    """Statistics of the first ``eval.num_images`` validation images at ``data.image_size`` (from the cache in
    ``eval.stats_cache`` when they were computed before), and how every FID against them is measured, for its run's
    record: the feature network, its weight file's hash, the statistics' identity (a digest of network, weights,
    image size, number of images and the data's shard index) and size, and the image size."""
    dataset, n = eval_split(cfg)
    index = Path(dataset.streams[0].local) / "index.json"  # names every shard with its hash: the data itself
    key = {"extractor": extractor.name, "weights": extractor.digest, "image_size": cfg.data.image_size,
           "num_images": n, "index": hashlib.sha256(index.read_bytes()).hexdigest()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    provenance = {"fid_features": extractor.name, "fid_weights_sha256": extractor.digest, "fid_reference": digest,
                  "fid_reference_images": str(n), "image_size": str(cfg.data.image_size)}
    path = Path(cfg.eval.stats_cache or DEFAULT_STATS_CACHE).expanduser() / f"val-{digest}.npz"
    if path.is_file():
        return FIDStats.load(path), provenance
    batches = validation_batches(dataset, n, cfg.eval.batch_size, cfg.data.image_size)
    stats = FIDStats.from_features(np.concatenate([extractor(to_float(images)) for images, _ in batches]))
    stats.save(path)
    return stats, provenance
