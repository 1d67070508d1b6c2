"""``scaling probe RUN``: one chain per tokenizer and probe kind: cache its tokens, train the probe, measure it.

The kinds are ``probe.kinds`` (default: the tokenizer's own, ``scaling.core.config.schema.probe_kinds``): the AR
probe over code ids and the flow probe over continuous latents (``scaling.probe.kinds``). Results go to the
tokenizer's own MLflow run, each kind under its own prefix (``probe/`` for ar, ``flow/`` for flow, with its
settings as ``PREFIX.*`` params), so the analysis sees one row per tokenizer with both reconstruction and
generation metrics. Each kind lives in its own directory (``RunDir.probe_dir``): its config, token shards,
checkpoints, sample grids and the results, written last; a chain that finds them returns them without work, and
an interrupted chain resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import Config
from scaling.core.config.loader import config_to_dict, dump_toml, flatten, read_toml
from scaling.core.config.schema import probe_kinds
from scaling.core.errors import UserError
from scaling.core.run_dir import ProbeDir, RunDir, load_run_config
from scaling.core.runtime import Runtime, init_runtime, on_main
from scaling.core.runtime import autocast as runtime_autocast
from scaling.core.signals import StopSignals
from scaling.export.generator import load_trained
from scaling.metrics.grids import save_image_grid
from scaling.models.factory import check_config
from scaling.probe import metrics
from scaling.probe.flow import latent_norm
from scaling.probe.kinds import KINDS, ProbeKind
from scaling.probe.tokens import cache_tokens, read_tokens
from scaling.probe.trainer import train_probe
from scaling.tracking.mlflow_tracker import PROVENANCE, Tracker

MAY_CHANGE = ("probe.", "eval.", "tracking.uri", "train.device")
NORM_IMAGES = 10000  # the flow probe's latent scale: per-channel statistics of the first this many training images


def run_probe(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """Every kind's chain on this process's ranks; their metrics."""
    from scaling.metrics.fid import check_eval

    cfg = check_config(load_run_config(run_dir, overrides, MAY_CHANGE))
    check_eval(cfg)  # the FID network's file, before any work
    with StopSignals() as signals:
        rt = init_runtime(cfg.train.device)
        try:
            return _run(cfg, run_dir, signals, rt)
        finally:
            rt.close()


def _run(cfg: Config, run_dir: Path, signals: StopSignals, rt: Runtime) -> dict[str, float]:
    results: dict[str, float] = {}
    tokenizer, tracker = None, None
    step = CheckpointStore(RunDir(run_dir).checkpoints).resolve(None)  # a finished run: the same on every rank
    for kind in (KINDS[name] for name in probe_kinds(cfg)):
        probe = ProbeDir(on_main(rt, lambda: claim_probe_dir(run_dir, cfg, kind)))
        if probe.results.is_file():
            results |= json.loads(probe.results.read_text())
            continue
        if tokenizer is None:
            tokenizer = load_trained(cfg, run_dir, step, cfg.train.ema_decay > 0, rt.device)
            tracker = Tracker(cfg.tracking, run_dir, enabled=rt.is_main)
            tracker.start({}, run_name=run_dir.name)
        results |= _probe(cfg, kind, probe, tokenizer, step, run_dir, signals, rt, tracker)
    if tracker is not None:
        tracker.finish()
    return results


def _probe(cfg: Config, kind: ProbeKind, probe: ProbeDir, tokenizer: torch.nn.Module, step: int, run_dir: Path,
           signals: StopSignals, rt: Runtime, tracker: Tracker) -> dict[str, float]:
    source = {"run": str(run_dir.resolve()), "step": step}
    meta = {split: cache_tokens(tokenizer, getattr(cfg.data, split), probe.tokens(split),
                                images=probe.token_images(split), image_size=cfg.data.image_size,
                                batch_size=cfg.eval.batch_size, part_images=cfg.probe.cache_part_images, rt=rt,
                                source=source, latents=kind.latents)
            for split in ("train", "val")}
    if kind.latents:  # the scale the flow trains at: the training split's, for both splits
        norm = latent_norm(read_tokens(probe.tokens("train"), NORM_IMAGES)[0], meta["train"]["channels"])
        meta = {split: m | {"norm": [v.tolist() for v in norm]} for split, m in meta.items()}
    tracker.log_params(probe_params(cfg, kind) | {f"{kind.prefix}.tokenizer_step": step})
    model = train_probe(cfg, kind, probe.root, meta["train"], rt, signals, tracker)
    results = measure(cfg, kind, model, tokenizer, meta, probe.root, rt, tracker)
    tracker.log_metrics(results, cfg.probe.steps)
    if rt.is_main:
        tmp = probe.results.with_name(probe.results.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, probe.results)
        events.record(probe.root, "finished", step=cfg.probe.steps)
    return results


def probe_settings(cfg: Config, kind: ProbeKind) -> dict[str, Any]:
    """The ``probe`` keys that shape this kind's results: all but the list of kinds and other kinds' own keys."""
    others = {key for k in KINDS.values() if k is not kind for key in k.keys}
    return {k: v for k, v in config_to_dict(cfg.probe).items() if k != "kinds" and k not in others}


def probe_params(cfg: Config, kind: ProbeKind) -> dict[str, Any]:
    """The kind's settings as ``PREFIX.key`` params, with the ``eval.*`` keys its gFID used."""
    evals = {k: v for k, v in flatten(config_to_dict(cfg)).items() if k.startswith("eval.")}
    return {f"{kind.prefix}.{k}": v for k, v in flatten(probe_settings(cfg, kind)).items()} | evals


def claim_probe_dir(run_dir: Path, cfg: Config, kind: ProbeKind) -> Path:
    """The run's directory of probe ``kind``, holding this kind's settings; different ones there are refused
    (its results would mix). A key the saved settings lack (they predate it) holds its default."""
    probe = RunDir(run_dir).probe_dir(kind.name)
    probe_dir, saved = probe.root, probe.config
    wanted = {"probe": probe_settings(cfg, kind)}
    if saved.is_file():
        old, new = flatten(read_toml(saved)), flatten(wanted)
        defaults = flatten({"probe": config_to_dict(type(cfg.probe)())})
        for key in sorted(new):
            if (was := old.get(key, defaults.get(key))) != new[key]:
                raise UserError(f"{key}: {probe_dir} holds a probe with {key} = {was!r}, not {new[key]!r}; "
                                "remove that directory to probe again")
        return probe_dir
    probe_dir.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(dump_toml(wanted))
    os.replace(tmp, saved)
    return probe_dir


def measure(cfg: Config, kind: ProbeKind, model: torch.nn.Module, tokenizer: torch.nn.Module, meta: dict[str, Any],
            probe_dir: Path, rt: Runtime, tracker: Tracker) -> dict[str, float]:
    """Validation loss, linear-probe accuracy, and gFID at each CFG scale (best with and without CFG), as
    ``PREFIX/...`` metrics."""
    from scaling.metrics.fid import FIDStats, feature_extractor, frechet_distance, reference_stats

    p, autocast, batch, pre = cfg.probe, runtime_autocast(cfg.train.precision, rt.device), cfg.eval.batch_size, kind.prefix
    probe = ProbeDir(probe_dir)
    val_tokens, val_labels = read_tokens(probe.tokens("val"))
    out = {kind.val_key: metrics.val_loss(model, kind, val_tokens, val_labels, meta["val"], cfg, batch, rt, autocast)}

    train_tokens, train_labels = read_tokens(probe.tokens("train"), p.linear_probe_images)
    train_x = metrics.features(model, kind, train_tokens, meta["train"], batch, rt, autocast)
    val_x = metrics.features(model, kind, val_tokens, meta["val"], batch, rt, autocast)
    num_classes = meta["train"]["num_classes"]
    out[f"{pre}/linear_acc"] = metrics.linear_probe(train_x, train_labels, val_x, val_labels, num_classes,
                                                    p.linear_probe_epochs, cfg.train.seed)
    out[f"{pre}/linear_chance"] = 1.0 / num_classes

    extractor = feature_extractor(cfg, rt.device)
    ref, how = reference_stats(cfg, extractor)
    how |= {"gfid_samples": str(p.gfid_samples), "cfg_scales": ",".join(f"{s:g}" for s in p.cfg_scales),
            "sampling_seed": str(cfg.train.seed), "linear_probe_images": str(len(train_labels))} | kind.how(cfg)
    tracker.set_tags({f"{PROVENANCE}/{pre}/{k}": v for k, v in how.items()})
    labels = torch.arange(p.gfid_samples) % num_classes
    fids = {}
    for scale in p.cfg_scales:
        images, feats = metrics.generate_images(model, kind, tokenizer, labels, scale, cfg, meta["train"], batch, rt,
                                                autocast, extractor)
        fids[scale] = frechet_distance(FIDStats.from_features(feats), ref)
        out[f"{pre}/gfid_cfg{scale:g}"] = fids[scale]
        if rt.is_main:
            # MLflow's artifact folder is named like the run's probe directory
            tracker.log_artifact(save_image_grid(images, probe.samples(scale)), probe.root.name)
    out |= best_of(fids, pre)
    return out


def best_of(fids: dict[float, float], prefix: str = "probe") -> dict[str, float]:
    """gFID without guidance (scale 1) and the best with it, with the scale that gave it."""
    out = {}
    if 1.0 in fids:
        out[f"{prefix}/gfid"] = fids[1.0]
    guided = {s: f for s, f in fids.items() if s != 1.0 and np.isfinite(f)}
    if guided:
        scale = min(guided, key=guided.get)
        out |= {f"{prefix}/gfid_best_cfg": guided[scale], f"{prefix}/cfg_scale_best": scale}
    return out
