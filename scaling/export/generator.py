"""Consolidate a run's sharded checkpoint into ``generator.safetensors``: full tensors, no optimiser state.

The file holds the generator's weights under their module names, the EMA weights (when the run keeps an EMA)
under ``ema.``, and in its metadata the resolved config (TOML) and the step, so a tokenizer is rebuilt from
the file alone, with no run directory, for inference, evaluation and the AR probe.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from scaling.config import Config
from scaling.config import load_config
from scaling.errors import UserError
from scaling.train.checkpoint import CheckpointStore, read_checkpoint

EMA_PREFIX = "ema."


def export_generator(run_dir: Path, out: Path | None = None, step: int | None = None) -> Path:
    """Write the generator (and EMA) of checkpoint ``step`` (default: the latest) of ``run_dir``."""
    from safetensors.torch import save_file

    from scaling.train.run_dir import CONFIG_FILE

    store = CheckpointStore(run_dir / "checkpoints")
    step = store.resolve(step)
    state = read_checkpoint(store.path(step))
    tensors = {k: v.contiguous() for k, v in state["model"].items()}
    tensors |= {EMA_PREFIX + k: v.contiguous() for k, v in state.get("ema", {}).items()}
    cfg_text = (run_dir / CONFIG_FILE).read_text()
    out = out or run_dir / "export" / "generator.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"config": cfg_text, "step": str(step), "format": "scaling-generator-1"})
    os.replace(tmp, out)
    return out


def load_generator(path: Path, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """The tokenizer of an exported file, in eval mode, with its EMA weights when it has them and ``ema``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from scaling.models.factory import build_tokenizer

    if not path.is_file():
        raise UserError(f"{path}: no such exported generator")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "scaling-generator-1":
        raise UserError(f"{path}: not a generator exported by `scaling export`")
    cfg = load_config(None, tomllib.loads(meta["config"]))
    tensors = load_file(str(path), device=str(device))
    weights = {k: v for k, v in tensors.items() if not k.startswith(EMA_PREFIX)}
    averaged = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    with torch.device("meta"):
        model = build_tokenizer(cfg)
    model.load_state_dict(averaged if ema and averaged else weights, assign=True)
    return model.eval(), cfg


def trained_tokenizer(run_dir: Path, rt: Any, ema: bool = True) -> tuple[nn.Module, int]:
    """The tokenizer of a run's latest checkpoint, whole on every rank of ``rt`` (for encoding and decoding,
    never trained further), and that checkpoint's step. Rank 0 exports it first unless the export is current."""
    from scaling.train.trainer import on_main

    def export_if_stale() -> int:
        path = run_dir / "export" / "generator.safetensors"
        latest = CheckpointStore(run_dir / "checkpoints").resolve(None)
        if exported_step(path) != latest:
            export_generator(run_dir, path, latest)
        return latest

    step = on_main(rt, export_if_stale)
    model, _ = load_generator(run_dir / "export" / "generator.safetensors", ema=ema, device=rt.device)
    return model.requires_grad_(False), step


def exported_step(path: Path) -> int | None:
    """The checkpoint step an exported file was written from, or None when there is no file."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("step", -1))
