"""MDS shards with mosaicml-streaming: write splits in parallel, verify them before training.

A dataset directory holds ``train/`` and ``val/`` splits (each an MDS index plus shards, and ``verified.json``, the
record of its shards' hash check) and ``classes.json``. Parallel writers each fill a ``part-NNNNN``
sub-directory; ``merge_index`` joins them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
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
VERIFIED = "verified.json"  # beside a split's index.json: its shards' hashes were checked, and against what

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
    verify_split(str(split_dir), hashes=True, force=True)  # read back once now, so that no start has to


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


def split_samples(split: str) -> int | None:
    """How many samples a local split's index names (None for a remote split)."""
    if "://" in split:
        return None
    index = json.loads((Path(split) / "index.json").read_text())
    return sum(int(shard.get("samples", 0)) for shard in index.get("shards", []))


def _fingerprint(split: Path, stats: dict[Path, os.stat_result]) -> dict[str, list[int]]:
    """What a verification holds for: the size and modification time of the index and of every shard."""
    index = (split / "index.json").stat()
    return {"index.json": [index.st_size, index.st_mtime_ns]} | \
        {str(s.relative_to(split)): [st.st_size, st.st_mtime_ns] for s, st in stats.items()}


def _record_paths(split: Path) -> list[Path]:
    """Where a split's verification is recorded: beside its index, or, where that directory is read-only (a shared
    dataset), in the user's cache under a name derived from the split's absolute path."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "scaling" / "verified"
    key = hashlib.sha256(str(split.resolve()).encode()).hexdigest()[:16]
    return [split / VERIFIED, cache / f"{key}.json"]


def _recorded(split: Path, fingerprint: dict[str, list[int]]) -> bool:
    for path in _record_paths(split):
        try:
            if json.loads(path.read_text()).get("fingerprint") == fingerprint:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _record(split: Path, fingerprint: dict[str, list[int]]) -> Path | None:
    """Write the record (atomically) where it can be written; None where it cannot."""
    body = json.dumps({"hash": HASH, "fingerprint": fingerprint, "verified_at": time.time()}, indent=1)
    for path in _record_paths(split):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(body)
            os.replace(tmp, path)
            return path
        except OSError:
            tmp.unlink(missing_ok=True)
    return None


def _hash_check(shards: list[tuple[Path, int, dict]]) -> None:
    from streaming.base.hashing import get_hash

    for shard, _, digests in shards:
        if HASH in digests and get_hash(HASH, shard.read_bytes()) != digests[HASH]:
            raise UserError(f"data shard {shard}: corrupt, {HASH} hash does not match the index")


def verify_split(split: str, *, hashes: bool, force: bool = False, wait_s: float = 6 * 3600) -> int:
    """Check a local split's shards: each present with its indexed size, always (a stat, nothing read); with
    ``hashes``, also each shard's hash, once: the result is recorded beside the index (``verified.json``) and
    trusted while the index's and the shards' sizes and modification times are unchanged, so a start reads no
    shard's contents at any dataset size. ``force`` hashes whatever is recorded (``scaling data verify``).
    Under torchrun only rank 0 hashes; the other ranks wait up to ``wait_s`` for its record. The shard count.

    Remote splits are verified by streaming itself as it downloads them (``validate_hash``).
    """
    path = Path(split)
    if "://" in split:
        return 0
    if not path.is_dir():
        raise UserError(f"data split {split}: directory not found")
    shards = list(_shard_entries(path))
    stats = {}  # one stat per shard: the size check and the fingerprint read the same
    for shard, size, _ in shards:
        if not shard.is_file():
            raise UserError(f"data shard {shard}: missing (named in {path / 'index.json'})")
        stats[shard] = shard.stat()
        if stats[shard].st_size != size:
            raise UserError(f"data shard {shard}: corrupt, {stats[shard].st_size} bytes where the index says {size}")
    if not shards:
        raise UserError(f"data split {split}: the MDS index names no shards")
    if hashes:
        fingerprint = _fingerprint(path, stats)
        if force or not _recorded(path, fingerprint):
            if int(os.environ.get("RANK", "0")) == 0 or force:
                _hash_check(shards)
                _record(path, fingerprint)
            else:
                _wait_for_record(path, fingerprint, wait_s)
    return len(shards)


def _wait_for_record(split: Path, fingerprint: dict[str, list[int]], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not _recorded(split, fingerprint):
        if time.monotonic() > deadline:
            raise UserError(f"data split {split}: rank 0 did not record its verification within {wait_s:g} s "
                            f"(run 'scaling data verify {split}')")
        time.sleep(1.0)
