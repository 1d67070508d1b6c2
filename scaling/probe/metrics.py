"""A probe's measurements (GigaTok's AR probing, the same for the flow probe): validation loss, gFID with a
CFG-scale search, linear probe.

Every rank runs the (sharded) GPT on its share of the rows, padded so that all ranks make the same number of
forward calls, and the results are gathered in row order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.core.config import Config
from scaling.core.runtime import Runtime
from scaling.probe.kinds import ProbeKind


def map_rows(fn: Callable[[torch.Tensor], torch.Tensor], n: int, batch: int, rt: Runtime) -> torch.Tensor:
    """``fn(row_ids)`` over rows 0..n-1 in batches, split over the ranks; the outputs of all rows, in order."""
    per_rank = -(-n // rt.world_size)
    rows = (torch.arange(per_rank) * rt.world_size + rt.rank) % n  # padded by wrapping around
    local = torch.cat([fn(chunk).cpu() for chunk in rows.split(batch)])
    parts = rt.gather_object(local)
    return torch.stack(parts, dim=1).flatten(0, 1)[:n]  # row j * world + r came from rank r


@torch.no_grad()
def val_loss(model: nn.Module, kind: ProbeKind, tokens: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any],
             cfg: Config, batch: int, rt: Runtime, autocast: Any) -> float:
    """The kind's validation loss (``ProbeKind.val_loss``) averaged over the validation images."""
    def per_image(rows: torch.Tensor) -> torch.Tensor:
        x, y = kind.inputs(tokens[rows].to(rt.device), meta), labels[rows].to(rt.device)
        with autocast:
            return kind.val_loss(model, x, y, rows, cfg).float()

    model.eval()
    return float(map_rows(per_image, len(tokens), batch, rt).mean())


@torch.no_grad()
def features(model: nn.Module, kind: ProbeKind, tokens: torch.Tensor, meta: dict[str, Any], batch: int, rt: Runtime,
             autocast: Any) -> torch.Tensor:
    def pooled(rows: torch.Tensor) -> torch.Tensor:
        with autocast:
            return model.features(kind.inputs(tokens[rows].to(rt.device), meta)).float()

    model.eval()
    return map_rows(pooled, len(tokens), batch, rt)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 num_classes: int, epochs: int, seed: int) -> float:
    """Top-1 validation accuracy of BatchNorm (no affine) + a linear head trained on frozen features (MAE's
    linear-probe head), with Adam; small enough for one process."""
    torch.manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm1d(train_x.shape[1], affine=False), nn.Linear(train_x.shape[1], num_classes))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    batch = min(256, len(train_x))
    for _ in range(epochs):
        head.train()
        for rows in torch.randperm(len(train_x)).split(batch):
            if len(rows) < 2:
                continue  # BatchNorm needs two samples
            loss = F.cross_entropy(head(train_x[rows]), train_y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    head.eval()
    with torch.no_grad():
        return float((head(val_x).argmax(1) == val_y).float().mean())


@torch.no_grad()
def generate_images(model: nn.Module, kind: ProbeKind, tokenizer: nn.Module, labels: torch.Tensor, cfg_scale: float,
                    cfg: Config, meta: dict[str, Any], batch: int, rt: Runtime, autocast: Any,
                    extract: Callable[[torch.Tensor], np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    """Sample tokens for ``labels``, decode them with the tokenizer, and return (the first batch of images,
    the FID features of all of them)."""
    generator = torch.Generator(rt.device).manual_seed(cfg.train.seed + rt.rank)
    first: list[torch.Tensor] = []

    def sample(rows: torch.Tensor) -> torch.Tensor:
        with autocast:
            images = kind.sample(model, tokenizer, labels[rows].to(rt.device), cfg_scale, cfg, meta, generator)
            images = images.float().clamp(-1, 1)
        if not first:
            first.append(images.cpu())
        return torch.from_numpy(extract(images))

    model.eval()
    feats = map_rows(sample, len(labels), batch, rt)
    return first[0], feats.numpy()
