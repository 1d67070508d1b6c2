"""``scaling eval RUN``: a trained tokenizer's reconstruction metrics on the validation split.

rFID, PSNR, SSIM, LPIPS, codebook usage and perplexity, and how far quantisation moves the encoder outputs (for
continuous tokens: the latents' scale), logged to the run's own MLflow run at the checkpoint's step and written
to ``RUN/eval/step-N/``.

One process and a plain (unsharded) model: evaluation needs no gradients and no optimiser state, and every
preset's generator fits on one device, so the checkpoint's generator (or EMA) entries are read straight into a
plain model (DCP reshards them from however many ranks saved them). No process group, no FSDP wrappers, and
memory is one copy of the weights, not the whole training state.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from scaling.core.config import Config, ModelConfig
from scaling.data.loader import to_float, validation_batches
from scaling.core.runtime import autocast as runtime_autocast
from scaling.core.runtime import resolve_device
from scaling.core.errors import UserError, require_file
from scaling.metrics.fid import (FIDStats, InceptionFeatures, TeacherFeatures, check_eval, eval_split, feature_extractor,
                              frechet_distance, reference_stats)
from scaling.metrics.grids import save_histogram, save_recon_grid
from scaling.metrics.pixel import psnr, ssim
from scaling.export.generator import load_trained
from scaling.losses.perceptual import PerceptualLoss
from scaling.models.factory import check_config
from scaling.models.nested import coarse_targets
from scaling.models.quantizers import MultiScaleQuantizer, QuantOut, bottleneck_stats
from scaling.tracking.mlflow_tracker import PROVENANCE, tracking_uri
from scaling.core.checkpoint import CheckpointStore
from scaling.core.run_dir import EvalDir, RunDir, load_run_config

LPIPS_SKIPPED = "skipped: the config names no VGG16 weights (loss.vgg_weights)"


@dataclass
class Target:
    """What one evaluation measures: a run's checkpoint, with its EMA or its raw weights."""

    run_dir: Path
    cfg: Config
    step: int
    ema: bool  # the EMA weights (the run keeps an EMA and they were asked for)
    run_id: str

    @property
    def raw(self) -> bool:
        """The raw weights of a run that keeps an EMA (``--no-ema``), not the ones it is judged by."""
        return bool(self.cfg.train.ema_decay) and not self.ema

    @property
    def prefix(self) -> str:
        """Metric keys: ``eval/...``, or ``eval_raw/...`` for the raw weights."""
        return "eval_raw" if self.raw else "eval"

    @property
    def outputs(self) -> EvalDir:
        return RunDir(self.run_dir).evaluation(self.step, self.raw)

    @property
    def out_dir(self) -> Path:
        return self.outputs.root


def evaluate(run_dir: Path, overrides: list[str] | None = None, step: int | None = None, ema: bool = True
             ) -> dict[str, float]:
    """Evaluate checkpoint ``step`` (default: the newest) of ``run_dir``; ``overrides`` (``--eval.key VALUE``)
    may set ``eval.*`` only. Returns the metrics as logged."""
    target = prepare(run_dir, overrides, step, ema)
    cfg = target.cfg
    device = resolve_device(cfg.eval.device)
    # Frozen networks first: a bad weight file fails here, before anything is computed or written.
    extractor = feature_extractor(cfg, device)
    perceptual = PerceptualLoss(cfg.loss.vgg_weights, cfg.loss.lpips_weights).to(device) if cfg.loss.vgg_weights \
        else None
    model = load_tokenizer(target, device)
    reference, how = reference_stats(cfg, extractor)
    metrics, extras = reconstruct(model, cfg, extractor, perceptual, device)
    metrics = {"rfid": frechet_distance(FIDStats.from_features(extras.pop("features")), reference)} | metrics
    for name, feats in extras["prefix_features"].items():  # rFID of each prefix alone (keepK, scalesK)
        metrics[f"rfid_{name}"] = frechet_distance(FIDStats.from_features(feats), reference)
    for name, feats in extras.pop("target_features").items():  # coarse to fine: against the prefix's own target
        metrics[f"rfid_{name}_target"] = frechet_distance(FIDStats.from_features(extras["prefix_features"][name]),
                                                          FIDStats.from_features(feats))
    metrics = {f"{target.prefix}/{k}": v for k, v in metrics.items()}
    how |= {"step": str(target.step), "ema": str(target.ema).lower()}
    files = save_outputs(target, metrics, extras, how)
    log_to_mlflow(target, metrics, files, how)
    return metrics


def evaluate_once(run_dir: Path) -> dict[str, float]:
    """``evaluate`` of the newest checkpoint, unless its ``metrics.json`` is there already (a requeued chain)."""
    saved = prepare(run_dir, None, None, True).outputs.metrics
    return json.loads(saved.read_text())["metrics"] if saved.is_file() else evaluate(run_dir)


def prepare(run_dir: Path, overrides: list[str] | None, step: int | None, ema: bool) -> Target:
    """Every check that needs no computation: the run, its config with the ``eval.*`` overrides, the FID
    network's weights, the LPIPS weights the config names, the checkpoint and the MLflow run."""
    cfg = check_config(load_run_config(run_dir, overrides or [], ("eval.",)))
    cfg.train.run_dir = str(run_dir)  # where the run is now (its cache too), not where it trained
    check_eval(cfg)
    if cfg.loss.vgg_weights:  # LPIPS, whatever the training's perceptual weight was
        require_file(cfg.loss.vgg_weights, "loss.vgg_weights")
        if cfg.loss.lpips_weights:
            require_file(cfg.loss.lpips_weights, "loss.lpips_weights")
    run = RunDir(run_dir)
    step = CheckpointStore(run.checkpoints).resolve(step)
    run_id = run.run_id()
    if run_id is None:
        raise UserError(f"RUN: {run_dir} has no MLflow run ({run.mlflow_run_id.name})")
    return Target(run_dir, cfg, step, ema and cfg.train.ema_decay > 0, run_id)


def load_tokenizer(target: Target, device: torch.device) -> nn.Module:
    """The run's tokenizer at ``target.step``, plain and in eval mode (all tokens kept, no dropout)."""
    return load_trained(target.cfg, target.run_dir, target.step, target.ema, device)


@torch.no_grad()
def reconstruct(model: nn.Module, cfg: Config, extractor: InceptionFeatures | TeacherFeatures,
                perceptual: PerceptualLoss | None, device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
    """One pass over the first ``eval.num_images`` validation images (centred, no augmentation): the per-image
    metrics' means, codebook statistics, the FLOPs spent (the first batch counted, per image, times the images),
    and (as extras) the reconstructions' FID features, the per-token distances to the assigned codes and the
    first batch for the grid."""
    autocast = runtime_autocast(cfg.train.precision, device)  # the precision the run trained and validated in
    dataset, n = eval_split(cfg)
    sums = {"psnr": 0.0, "ssim": 0.0} | ({"lpips": 0.0} if perceptual is not None else {})
    features, outs, first, per_image = [], [], None, 0.0
    prefixes = prefix_decoders(model, cfg)
    prefix_features: dict[str, list[np.ndarray]] = {name: [] for name in prefixes}
    target_features: dict[str, list[np.ndarray]] = {name: [] for name, p in prefixes.items() if p.target_fid}
    for images, _ in validation_batches(dataset, n, cfg.eval.batch_size, cfg.data.image_size):
        x = to_float(images).to(device)
        with FlopCounterMode(display=False) if first is None else nullcontext() as counter:
            recon, q = _measure_batch(model, x, extractor, perceptual, autocast, sums, features, prefixes,
                                      prefix_features, target_features)
        outs.append(q)
        if first is None:
            first, per_image = (x.cpu(), recon.cpu()), counter.get_total_flops() / len(x)
    metrics = {k: v / n for k, v in sums.items()} | bottleneck_stats(outs, cfg.quantizer)
    dist = torch.cat([q.distance.flatten().float().cpu() for q in outs]).numpy() if outs[0].discrete else None
    if dist is not None:  # how far quantisation moved the encoder outputs (continuous tokens are not moved)
        p50, p95 = np.percentile(dist, [50, 95])
        metrics |= {"code_distance_mean": float(dist.mean()), "code_distance_p50": float(p50),
                    "code_distance_p95": float(p95), "code_distance_max": float(dist.max())}
    metrics |= {"num_images": float(n), "flops": per_image * n}
    return metrics, {"features": np.concatenate(features), "distances": dist, "first": first,
                     "prefix_features": {k: np.concatenate(v) for k, v in prefix_features.items()},
                     "target_features": {k: np.concatenate(v) for k, v in target_features.items()}}


def _measure_batch(model: nn.Module, x: torch.Tensor, extractor: InceptionFeatures | TeacherFeatures,
                   perceptual: PerceptualLoss | None, autocast: Any, sums: dict[str, float],
                   features: list[np.ndarray], prefixes: dict[str, Prefix], prefix_features: dict[str, list[np.ndarray]],
                   target_features: dict[str, list[np.ndarray]]) -> tuple[torch.Tensor, Any]:
    """Reconstruct a batch, add its per-image metrics to ``sums`` and its FID features to ``features`` (and each
    prefix's to ``prefix_features``, its target's to ``target_features``)."""
    with autocast:
        recon, q = model(x)
    recon = recon.float()
    for name, prefix in prefixes.items():  # what part of the tokens alone reconstructs
        with autocast:
            partial = prefix.decode(q).float()
        sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + float(psnr(partial, x).sum())
        prefix_features[name].append(extractor(partial))
        if prefix.target is not None:
            target = prefix.target(x)
            sums[f"psnr_{name}_target"] = sums.get(f"psnr_{name}_target", 0.0) + float(psnr(partial, target).sum())
            if prefix.target_fid:
                target_features[name].append(extractor(target))
    sums["psnr"] += float(psnr(recon, x).sum())
    sums["ssim"] += float(ssim(recon, x).sum())
    if perceptual is not None:
        sums["lpips"] += float(perceptual(recon, x)) * len(x)
    features.append(extractor(recon))
    return recon, q


@dataclass(frozen=True)
class Prefix:
    """A prefix of a tokenizer's sequence that decodes alone."""

    decode: Callable[[QuantOut], torch.Tensor]  # the batch's QuantOut -> that prefix's image
    # nested dropout: images -> the prefix's DetailFlow target (what a coarse-to-fine model trained to give)
    target: Callable[[torch.Tensor], torch.Tensor] | None = None
    target_fid: bool = False  # also the rFID against the targets (coarse to fine only: a feature pass per prefix)


def prefix_decoders(model: nn.Module, cfg: Config) -> dict[str, Prefix]:
    """The prefixes of a tokenizer's sequence that decode alone, by metric suffix: ``keepK``, the first K = 1, 2,
    4, ... 1D tokens of a tokenizer trained with nested dropout, with their DetailFlow targets (the config's map,
    whether or not it trained on them: a plain model's PSNR against them is the baseline a coarse-to-fine one
    must beat); ``scalesK``, the first K scales of multi-scale quantisation; none otherwise."""
    if getattr(model, "nested", None) is not None:
        keeps = [2**i for i in range(model.num_tokens.bit_length()) if 2**i < model.num_tokens]
        m = cfg.model
        return {f"keep{k}": Prefix(functools.partial(_decode_kept, model, k), functools.partial(_coarse_target, k, m),
                                   target_fid=m.coarse_to_fine) for k in keeps}
    if isinstance(model.quantizer, MultiScaleQuantizer):
        ends = model.quantizer.scale_boundaries()[:-1]
        return {f"scales{i + 1}": Prefix(functools.partial(_decode_ids, model, end)) for i, end in enumerate(ends)}
    return {}


def _coarse_target(keep: int, m: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    return coarse_targets(x, torch.full((len(x),), keep), m.num_tokens, m.coarse_power, m.coarse_min_side)


def _decode_kept(model: nn.Module, keep: int, q: QuantOut) -> torch.Tensor:
    return model.decode(q.z_q, keep=keep)


def _decode_ids(model: nn.Module, end: int, q: QuantOut) -> torch.Tensor:
    return model.decode_indices(q.indices[:, :end])


def save_outputs(target: Target, metrics: dict[str, float], extras: dict[str, Any], how: dict[str, str]
                 ) -> list[Path]:
    """The metrics with how they were measured (written last), the reconstructions grid and the distance
    histogram, in ``target.outputs``."""
    out = target.outputs
    out.root.mkdir(parents=True, exist_ok=True)
    files = [save_recon_grid(*extras["first"], out.reconstructions)]
    if extras["distances"] is not None:
        files.append(save_histogram(extras["distances"], out.code_distances,
                                    xlabel="l2 distance, encoder output to its code",
                                    title=f"{target.run_dir.name} step {target.step}{' (EMA)' if target.ema else ''}"))
    record = {"run_dir": str(target.run_dir), "step": target.step, "ema": target.ema, "metrics": metrics,
              "provenance": how}
    if f"{target.prefix}/lpips" not in metrics:
        record["lpips"] = LPIPS_SKIPPED
    tmp = out.metrics.with_name(out.metrics.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out.metrics)
    return [out.metrics, *files]


def log_to_mlflow(target: Target, metrics: dict[str, float], files: list[Path], how: dict[str, str]) -> None:
    """Metrics at the checkpoint's step, how they were measured as ``provenance/PREFIX/...`` tags (a later
    evaluation replaces them with its own) and the files as artifacts, in the run's own MLflow run; its status is
    left as training left it."""
    import time

    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(target.cfg.tracking))
    now = int(time.time() * 1000)
    tags = [RunTag(f"{PROVENANCE}/{target.prefix}/{k}", v) for k, v in how.items()]
    try:
        client.log_batch(target.run_id, metrics=[Metric(k, v, now, target.step) for k, v in metrics.items()],
                         tags=tags)
        for path in files:
            client.log_artifact(target.run_id, str(path), target.out_dir.relative_to(target.run_dir).as_posix())
    except Exception as e:  # the results are on disk; a tracking server that is down must not lose them
        warnings.warn(f"MLflow: could not log to run {target.run_id} ({type(e).__name__}: {str(e)[:200]}); "
                      f"the results are in {target.out_dir}", stacklevel=2)
