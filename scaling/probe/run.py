"""``scaling probe RUN``: one chain per tokenizer: cache its tokens, train the AR probe, measure it.

Results go to the tokenizer's own MLflow run under ``probe/`` (with the probe's config as ``probe.*`` params),
so the analysis sees one row per tokenizer with both reconstruction and generation metrics. Everything lives
in the run's probe directory (``ProbeDir``): the probe's config, token shards, checkpoints, sample grids and
the results, written last; a chain that finds them returns them without work, and an interrupted chain resumes
where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaling.core.config import Config
from scaling.core.config.loader import config_to_dict, dump_toml, flatten, read_toml
from scaling.core.runtime import Runtime, init_runtime
from scaling.core.runtime import autocast as runtime_autocast
from scaling.core.errors import UserError
from scaling.metrics.grids import save_image_grid
from scaling.export.generator import load_trained
from scaling.models.factory import check_config
from scaling.probe import metrics
from scaling.probe.tokens import cache_tokens, read_tokens
from scaling.probe.trainer import train_ar
from scaling.tracking.mlflow_tracker import PROVENANCE, Tracker
from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from scaling.core.signals import StopSignals
from scaling.core.run_dir import ProbeDir, RunDir, load_run_config
from scaling.core.runtime import on_main

MAY_CHANGE = ("probe.", "eval.", "tracking.uri", "train.device")


def run_probe(run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """The whole chain on this process's ranks; the probe metrics."""
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
    probe = ProbeDir(on_main(rt, lambda: claim_probe_dir(run_dir, cfg)))
    if probe.results.is_file():
        return json.loads(probe.results.read_text())
    step = CheckpointStore(RunDir(run_dir).checkpoints).resolve(None)  # a finished run: the same on every rank
    tokenizer = load_trained(cfg, run_dir, step, cfg.train.ema_decay > 0, rt.device)
    source = {"run": str(run_dir.resolve()), "step": step}
    meta = {split: cache_tokens(tokenizer, getattr(cfg.data, split), probe.tokens(split),
                                images=probe.token_images(split),
                                image_size=cfg.data.image_size, batch_size=cfg.eval.batch_size,
                                part_images=cfg.probe.cache_part_images, rt=rt, source=source)
            for split in ("train", "val")}

    tracker = Tracker(cfg.tracking, run_dir, enabled=rt.is_main)
    tracker.start({}, run_name=run_dir.name)
    tracker.log_params(probe_params(cfg) | {"probe.tokenizer_step": step})
    model = train_ar(cfg, probe.root, meta["train"], rt, signals, tracker)
    results = measure(cfg, model, tokenizer, meta, probe.root, rt, tracker)
    tracker.log_metrics(results, cfg.probe.steps)
    tracker.finish()
    if rt.is_main:
        tmp = probe.results.with_name(probe.results.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, probe.results)
        events.record(probe.root, "finished", step=cfg.probe.steps)
    return results


def probe_params(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in flatten(config_to_dict(cfg)).items() if k.startswith(("probe.", "eval."))}


def claim_probe_dir(run_dir: Path, cfg: Config) -> Path:
    """The run's probe directory, holding this probe config; a different one there is refused (its results
    would mix)."""
    probe = RunDir(run_dir).probe
    probe_dir, saved = probe.root, probe.config
    wanted = {"probe": config_to_dict(cfg.probe)}
    if saved.is_file():
        old, new = flatten(read_toml(saved)), flatten(wanted)
        for key in sorted(new):
            if old.get(key) != new[key]:
                raise UserError(f"{key}: {probe_dir} holds a probe with {key} = {old.get(key)!r}, not {new[key]!r}; "
                                "remove that directory to probe again")
        return probe_dir
    probe_dir.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(dump_toml(wanted))
    os.replace(tmp, saved)
    return probe_dir


def measure(cfg: Config, model: torch.nn.Module, tokenizer: torch.nn.Module, meta: dict[str, Any], probe_dir: Path,
            rt: Runtime, tracker: Tracker) -> dict[str, float]:
    """AR validation loss, linear-probe accuracy, and gFID at each CFG scale (best with and without CFG)."""
    from scaling.metrics.fid import FIDStats, feature_extractor, frechet_distance, reference_stats

    p, autocast, batch = cfg.probe, runtime_autocast(cfg.train.precision, rt.device), cfg.eval.batch_size
    probe = ProbeDir(probe_dir)
    val_tokens, val_labels = read_tokens(probe.tokens("val"))
    out = {"probe/ar_val_loss": metrics.ar_val_loss(model, val_tokens, val_labels, batch, rt, autocast)}

    train_tokens, train_labels = read_tokens(probe.tokens("train"), p.linear_probe_images)
    train_x = metrics.features(model, train_tokens, batch, rt, autocast)
    val_x = metrics.features(model, val_tokens, batch, rt, autocast)
    num_classes = meta["train"]["num_classes"]
    out["probe/linear_acc"] = metrics.linear_probe(train_x, train_labels, val_x, val_labels, num_classes,
                                                   p.linear_probe_epochs, cfg.train.seed)
    out["probe/linear_chance"] = 1.0 / num_classes

    extractor = feature_extractor(cfg, rt.device)
    ref, how = reference_stats(cfg, extractor)
    how |= {"gfid_samples": str(p.gfid_samples), "cfg_scales": ",".join(f"{s:g}" for s in p.cfg_scales),
            "sampling_seed": str(cfg.train.seed), "temperature": f"{p.temperature:g}", "top_k": str(p.top_k),
            "linear_probe_images": str(len(train_labels))}
    tracker.set_tags({f"{PROVENANCE}/probe/{k}": v for k, v in how.items()})
    labels = torch.arange(p.gfid_samples) % num_classes
    grid = tuple(meta["train"]["grid"])
    fids = {}
    for scale in p.cfg_scales:
        images, feats = metrics.generate_images(model, tokenizer, grid, labels, scale, p.temperature, p.top_k, batch,
                                                cfg.train.seed, rt, autocast, extractor)
        fids[scale] = frechet_distance(FIDStats.from_features(feats), ref)
        out[f"probe/gfid_cfg{scale:g}"] = fids[scale]
        if rt.is_main:
            # MLflow's artifact folder is named like the run's probe directory
            tracker.log_artifact(save_image_grid(images, probe.samples(scale)), probe.root.name)
    out |= best_of(fids)
    return out


def best_of(fids: dict[float, float]) -> dict[str, float]:
    """gFID without guidance (scale 1) and the best with it, with the scale that gave it."""
    out = {}
    if 1.0 in fids:
        out["probe/gfid"] = fids[1.0]
    guided = {s: f for s, f in fids.items() if s != 1.0 and np.isfinite(f)}
    if guided:
        scale = min(guided, key=guided.get)
        out |= {"probe/gfid_best_cfg": guided[scale], "probe/cfg_scale_best": scale}
    return out
