"""Consolidate a run's sharded checkpoint into ``generator.safetensors``: full tensors, no optimiser state.

The file holds the generator's weights under their module names, the EMA weights (when the run keeps an EMA)
under ``ema.``, and in its metadata the resolved config (TOML) and the step, so a tokenizer is rebuilt from
the file alone, with no run directory, for inference, evaluation and the AR probe.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import torch
import torch.nn as nn

from scaling.core.config import Config
from scaling.core.errors import UserError
from scaling.core.checkpoint import CheckpointStore, read_checkpoint
from scaling.core.run_dir import RunDir

EMA_PREFIX = "ema."


def export_generator(run_dir: Path, out: Path | None = None, step: int | None = None) -> Path:
    """Write the generator (and EMA) of checkpoint ``step`` (default: the latest) of ``run_dir``."""
    from safetensors.torch import save_file

    run = RunDir(run_dir)
    out = out or run.exported_generator
    check_output(out)
    store = CheckpointStore(run.checkpoints)
    step = store.resolve(step)
    state = read_checkpoint(store.path(step))
    tensors = {k: v.contiguous() for k, v in state["model"].items()}
    tensors |= {EMA_PREFIX + k: v.contiguous() for k, v in state.get("ema", {}).items()}
    cfg_text = run.config.read_text()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"config": cfg_text, "step": str(step), "format": "scaling-generator-1"})
    os.replace(tmp, out)
    return out


def check_output(out: Path) -> None:
    """``out`` may be written: nothing is there, or an earlier export (replaced); never another file."""
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory, not a file path")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"--out {out}: {parent} is a file, not a directory")
    if out.exists() and not _is_export(out):
        raise UserError(f"--out {out}: exists and is not a generator `scaling export` wrote; not overwritten "
                        f"(choose another path)")


def _is_export(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == "scaling-generator-1"
    except Exception:  # not a safetensors file at all
        return False


def load_generator(path: Path, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """The tokenizer of an exported file, in eval mode, with its EMA weights when it has them and ``ema``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from scaling.models.factory import build_tokenizer, load_config

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


def load_trained(cfg: Config, run_dir: Path, step: int, ema: bool, device: torch.device) -> nn.Module:
    """Checkpoint ``step`` of ``run_dir``'s tokenizer, plain (unsharded) on ``device`` and in eval mode, with the
    EMA weights when ``ema``: DCP reads just the generator's entries, in this process alone (under torchrun too),
    for evaluation and the AR probe, which encode and decode but never train it."""
    from scaling.models.factory import build_tokenizer
    from scaling.core.checkpoint import load_generator_weights

    with torch.device("meta"):
        model = build_tokenizer(cfg)
    model.to_empty(device=device)
    with torch.no_grad():
        model.init_weights()  # anything the checkpoint does not hold (non-persistent buffers) gets its values
    load_generator_weights(CheckpointStore(RunDir(run_dir).checkpoints).path(step), model, ema)
    return model.eval().requires_grad_(False)
