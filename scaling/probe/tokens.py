"""Token caching: a dataset split encoded by a trained tokenizer, as MDS shards of (tokens, label, index): code ids
for the AR probe, or continuous latents (the decoder's input, position-major: (L, C) flattened) for the flow probe.

The split is cut into fixed parts of ``part_images`` images in stored order; ranks take parts round-robin and
each part is written to ``part-NNNNN.tmp`` and renamed when whole, so a killed run keeps its finished parts and
redoes only the one it was writing. Images are centred (no augmentation) and each part is encoded in the same
batches whoever writes it, so the tokens do not depend on how often the caching was interrupted.
``tokens.json``, written last, marks a complete split.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from streaming import StreamingDataLoader, StreamingDataset

from scaling.data.loader import open_stream, resize_uint8, stream_kwargs, to_float
from scaling.core.runtime import Runtime
from scaling.core.errors import UserError
from scaling.core.hooks import fault_point

def columns(latents: bool) -> dict[str, str]:
    return {"tokens": "ndarray:float32" if latents else "ndarray:int32", "label": "int", "index": "int"}


META_FILE = "tokens.json"
PART_META = "part.meta"  # (not .json: merge_index reads every .json as an index) beside a part's MDS index: its token grid and labels


def cache_tokens(tokenizer: torch.nn.Module, split: str, out: Path, *, images: Path, image_size: int,
                 batch_size: int, part_images: int, rt: Runtime, source: dict[str, Any],
                 latents: bool = False) -> dict[str, Any]:
    """Encode ``split`` (its shards cached in ``images``) into ``out`` unless it is complete there for the same
    ``source`` (tokenizer and step); returns the split's metadata: count, seq_len, grid (the token layout the
    decoder takes), channels (of a latent; 0 for ids), num_classes. ``latents``: the decoder's continuous input
    (z_q: for a discrete tokenizer its code vectors), not code ids."""
    meta_path = out / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta["source"] == source:
            return meta
        raise UserError(f"token cache {out}: holds tokens of {meta['source']}, not {source}; remove it to re-encode")
    dataset = open_stream(**stream_kwargs(split, images), shuffle=False)
    out.mkdir(parents=True, exist_ok=True)
    n_parts = -(-len(dataset) // part_images)
    grid, labels = None, set()
    for part in range(rt.rank, n_parts, rt.world_size):
        lo, hi = part * part_images, min((part + 1) * part_images, len(dataset))
        grid, part_labels = _write_part(tokenizer, dataset, part, range(lo, hi), out, image_size, batch_size,
                                        rt.device, latents)
        labels |= part_labels
    info = rt.gather_object((grid, sorted(labels)))
    if rt.is_main:
        from streaming.base.util import merge_index

        merge_index(str(out), keep_local=True)
        layout = next(g for g, _ in info if g is not None)  # per image: (C, *grid) latents or (*grid) ids
        grid = layout[1:] if latents else layout
        meta = {"source": source, "split": split, "count": len(dataset), "grid": list(grid),
                "seq_len": int(np.prod(grid)), "channels": layout[0] if latents else 0,
                "num_classes": max(max(ls, default=-1) for _, ls in info) + 1}
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, meta_path)
    return rt.broadcast_object(json.loads(meta_path.read_text()) if rt.is_main else None)


def _write_part(tokenizer: torch.nn.Module, dataset: StreamingDataset, part: int, rows: range, out: Path,
                image_size: int, batch_size: int, device: torch.device, latents: bool
                ) -> tuple[tuple[int, ...], set[int]]:
    """Write part ``part`` (skipped when already whole); returns an image's token layout and the labels seen."""
    from streaming import MDSWriter

    final, tmp = out / f"part-{part:05d}", out / f"part-{part:05d}.tmp"
    if (final / "index.json").is_file():
        done = json.loads((final / PART_META).read_text())
        return tuple(done["grid"]), set(done["labels"])
    shutil.rmtree(tmp, ignore_errors=True)
    labels: set[int] = set()
    with MDSWriter(out=str(tmp), columns=columns(latents), hashes=["xxh64"], progress_bar=False) as writer:
        for start in range(rows.start, rows.stop, batch_size):
            images, ys, idx = zip(*(dataset[i] for i in range(start, min(start + batch_size, rows.stop))))
            codes = encode(tokenizer, torch.stack(images), image_size, device, latents)
            rows_out = codes.flatten(2).transpose(1, 2) if latents else codes  # latents position-major: (L, C)
            for tokens, y, i in zip(rows_out.flatten(1).numpy(), ys, idx):
                writer.write({"tokens": tokens, "label": int(y), "index": int(i)})
            labels.update(int(y) for y in ys)
            fault_point("token-cache-mid-part", part)
    grid = tuple(codes.shape[1:])
    (tmp / PART_META).write_text(json.dumps({"grid": grid, "labels": sorted(labels)}))
    os.replace(tmp, final)
    return grid, labels


@torch.no_grad()
def encode(tokenizer: torch.nn.Module, images: torch.Tensor, image_size: int, device: torch.device,
           latents: bool = False) -> torch.Tensor:
    """uint8 NCHW images -> int32 code ids on the CPU, in the tokenizer's layout: (B, H, W) or (B, N); with
    ``latents``, the float32 decoder inputs instead: (B, C, H, W) or (B, C, N)."""
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        images = resize_uint8(images, image_size)
    q = tokenizer.encode(to_float(images).to(device))
    return q.z_q.float().cpu() if latents else q.indices.to(torch.int32).cpu()


class TokenStream(StreamingDataset):
    """Cached tokens as (tokens (L,) int64 ids or (L * C,) float32 latents, label, image index)."""

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int, int]:  # type: ignore[override]
        sample = super().__getitem__(idx)
        tokens = sample["tokens"]  # a read-only view of the shard: copied
        tokens = tokens.astype(np.int64 if tokens.dtype.kind == "i" else np.float32)
        return torch.from_numpy(tokens), int(sample["label"]), int(sample["index"])


def token_loader(split: Path, batch_size: int, seed: int) -> StreamingDataLoader:
    """A shuffled, resumable loader over a cached split (``state_dict`` holds the position), per rank."""
    dataset = open_stream(TokenStream, local=str(split), shuffle=True, shuffle_seed=seed, batch_size=batch_size,
                          num_canonical_nodes=1)
    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=0, drop_last=True,
                               generator=torch.Generator().manual_seed(seed))


def read_tokens(split: Path, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (0: all) cached samples in stored order, as (tokens (N, L), labels (N,))."""
    dataset = open_stream(TokenStream, local=str(split), shuffle=False)
    n = min(limit, len(dataset)) if limit else len(dataset)
    tokens, labels, _ = zip(*(dataset[i] for i in range(n)))
    return torch.stack(tokens), torch.tensor(labels)
