"""MDS shards with mosaicml-streaming: write splits in parallel, verify them before training.

A dataset directory holds ``train/`` and ``val/`` splits (each an MDS index plus shards) and
``classes.json``. Parallel writers each fill a ``part-NNNNN`` sub-directory; ``merge_index`` joins them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from scaling.core.errors import UserError

COLUMNS = {"image": "jpeg", "label": "int"}
LOSSLESS_COLUMNS = {"image": "png", "label": "int"}
HASH = "xxh64"
SHARD_BYTES = 1 << 26
SPLITS = ("train", "val")

# A chunk of work for one writer process: (split directory, part number, items).
Chunk = tuple[str, int, Sequence]


def _write_part(chunk: Chunk, make: Callable[[object], tuple[np.ndarray | Image.Image, int]], lossless: bool) -> int:
    from streaming import MDSWriter

    split_dir, part, items = chunk
    out = os.path.join(split_dir, f"part-{part:05d}")
    columns = LOSSLESS_COLUMNS if lossless else COLUMNS
    with MDSWriter(out=out, columns=columns, hashes=[HASH], size_limit=SHARD_BYTES, progress_bar=False) as writer:
        for item in items:
            image, label = make(item)
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image)
            writer.write({"image": image, "label": label})
    return len(items)


def write_split(
    split_dir: Path,
    items: Sequence,
    make: Callable[[object], tuple[np.ndarray | Image.Image, int]],
    *,
    workers: int,
    lossless: bool,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write ``make(item)`` for every item as one MDS split, ``workers`` processes in parallel."""
    from streaming.base.util import merge_index

    if split_dir.exists():
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True)
    n_parts = max(1, min(len(items) // 256, 4 * max(workers, 1))) if len(items) else 1
    bounds = np.linspace(0, len(items), n_parts + 1).astype(int)
    chunks = [(str(split_dir), i, items[bounds[i] : bounds[i + 1]]) for i in range(n_parts)]
    if workers <= 1:
        for chunk in chunks:
            n = _write_part(chunk, make, lossless)
            if progress:
                progress(n)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for n in pool.map(_write_part, chunks, [make] * n_parts, [lossless] * n_parts):
                if progress:
                    progress(n)
    merge_index(str(split_dir), keep_local=True)


def mark_complete(root: Path, meta: dict) -> None:
    """``dataset.json`` is written last: its presence means every split finished."""
    tmp = root / "dataset.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, root / "dataset.json")


def is_complete(root: Path, meta: dict) -> bool:
    path = root / "dataset.json"
    return path.is_file() and json.loads(path.read_text()) == meta


def _shard_entries(split: Path) -> Iterator[tuple[Path, int, dict]]:
    """(path, bytes, hashes) of every shard an MDS index names, sub-indexes included."""
    index_path = split / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise UserError(f"data split {split}: no MDS index.json (not an MDS split, or not written yet)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"data split {split}: index.json is corrupt ({e})") from None
    for shard in index.get("shards", []):
        raw = shard.get("zip_data") or shard["raw_data"]
        yield split / raw["basename"], int(raw["bytes"]), raw.get("hashes", {})


def verify_split(split: str, *, hashes: bool) -> int:
    """Check a local split's shards exist with the indexed size (and hash); return the shard count.

    Remote splits are verified by streaming itself as it downloads them (``validate_hash``).
    """
    from streaming.base.hashing import get_hash

    path = Path(split)
    if "://" in split:
        return 0
    if not path.is_dir():
        raise UserError(f"data split {split}: directory not found")
    count = 0
    for shard, size, digests in _shard_entries(path):
        if not shard.is_file():
            raise UserError(f"data shard {shard}: missing (named in {path / 'index.json'})")
        if shard.stat().st_size != size:
            raise UserError(f"data shard {shard}: corrupt, {shard.stat().st_size} bytes where the index says {size}")
        if hashes and HASH in digests and get_hash(HASH, shard.read_bytes()) != digests[HASH]:
            raise UserError(f"data shard {shard}: corrupt, {HASH} hash does not match the index")
        count += 1
    if count == 0:
        raise UserError(f"data split {split}: the MDS index names no shards")
    return count
