"""Training and validation input through mosaicml-streaming.

The stream yields uint8 images at their stored size with their sample index; augmentation (GigaTok: random
crop of ``crop_min``..1.0 of the side, horizontal flip) runs in the training loop, drawn from a generator seeded
by (run seed, step, sample index). So a sample gets the same crop whichever rank reads it and however many
ranks there are, and a resumed run draws exactly the crops an uninterrupted one would.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from streaming import StreamingDataLoader, StreamingDataset

from scaling.core.config import DataConfig
from scaling.core.errors import UserError
from scaling.data.mds import verify_split


S = TypeVar("S", bound=StreamingDataset)


class ImageStream(StreamingDataset):
    """MDS samples as (uint8 CxHxW tensor, label, sample index)."""

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int, int]:  # type: ignore[override]
        try:
            sample = super().__getitem__(idx)
            image = np.asarray(sample["image"].convert("RGB"))
            label = int(sample["label"])
        except Exception as e:  # a shard changed since it was verified: name it, in one line
            raise UserError(f"data shard {self.shard_path(idx)}: corrupt, sample {idx} cannot be read "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                            f"'scaling data verify' checks the whole split") from None
        return torch.from_numpy(image.copy()).permute(2, 0, 1), label, idx

    def shard_path(self, idx: int) -> str:
        """The file of the shard that holds sample ``idx``."""
        shard_id, _ = self.spanner[idx]
        shard = self.shards[shard_id]
        stream = self.streams[self.stream_per_shard[shard_id]]
        return os.path.join(stream.local, stream.split or "", (shard.zip_data or shard.raw_data).basename)


def stream_kwargs(split: str, cache_dir: Path) -> dict:
    if "://" in split:
        return {"remote": split, "local": str(cache_dir), "validate_hash": "xxh64"}
    return {"local": split}


def train_loader(cfg: DataConfig, batch_size: int, seed: int, cache_root: Path) -> StreamingDataLoader:
    """A resumable, shuffled loader over the training split; ``batch_size`` images per rank.

    Its ``state_dict`` holds the global position (samples seen by all ranks), and the global sample order
    depends only on the seed and the one canonical node, so a run resumes on another number of ranks with
    the same global batch and neither repeats nor skips a sample."""
    dataset = open_stream(
        **stream_kwargs(cfg.train, Path(cfg.cache_dir or cache_root) / "train"),
        shuffle=True, shuffle_seed=seed, batch_size=batch_size, num_canonical_nodes=1,
    )
    # Its own generator: each new iterator draws a worker seed, which must not move the global RNG
    # (a resumed run creates one more iterator than an uninterrupted one).
    return StreamingDataLoader(
        dataset, batch_size=batch_size, num_workers=cfg.num_workers, drop_last=True,
        persistent_workers=False, pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
    )


def validation_images(cfg: DataConfig, cache_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``val_samples`` validation images (uint8, NCHW, at ``image_size``) and labels."""
    dataset = validation_stream(cfg, cache_root)
    n = min(cfg.val_samples, len(dataset))
    return next(validation_batches(dataset, n, n, cfg.image_size))


def validation_stream(cfg: DataConfig, cache_root: Path) -> ImageStream:
    """The validation split in its stored order; its (local copy of the) index is in ``streams[0].local``."""
    return open_stream(**stream_kwargs(cfg.val, Path(cfg.cache_dir or cache_root) / "val"), shuffle=False)


def open_stream(cls: type[S] = ImageStream, **kwargs: Any) -> S:
    """A streaming dataset of ``cls``. Streaming registers each dataset under a shared-memory prefix by looking for a
    free one, then creating it: two processes on one machine opening datasets at the same instant (a sweep's
    trials, one trial's probe beside another's training) could pick the same one, and the later failed with
    FileExistsError. Looking and creating happen under one machine-wide lock, taken by each process that is its
    node's leader (a single rank, or local rank 0); the ranks of one job construct between barriers while it is
    held, so none of them looks while another job is creating."""
    several = dist.is_initialized() and dist.get_world_size() > 1
    leader = int(os.environ.get("LOCAL_RANK", "0")) == 0
    with _prefix_lock() if leader else nullcontext():
        if several:
            dist.barrier()
        dataset = cls(**kwargs)
        if several:
            dist.barrier()
    return dataset


PREFIX_LOCK = Path(tempfile.gettempdir()) / "scaling-streaming-prefix.lock"


@contextmanager
def _prefix_lock() -> Iterator[None]:
    with open(PREFIX_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases it


def validation_batches(dataset: ImageStream, n: int, batch_size: int, image_size: int
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` images and labels in batches: uint8 NCHW as stored (``convert`` centre-crops them), resized
    to ``image_size``, no augmentation."""
    for start in range(0, n, batch_size):
        images, labels, _ = zip(*(dataset[i] for i in range(start, min(start + batch_size, n))))
        batch = torch.stack(images)
        if batch.shape[-1] != image_size or batch.shape[-2] != image_size:
            batch = resize_uint8(batch, image_size)
        yield batch, torch.tensor(labels)


def check_splits(cfg: DataConfig, *, hashes: bool = True) -> None:
    """Fail early, with the shard named, on a missing or corrupt split."""
    verify_split(cfg.train, hashes=hashes)
    verify_split(cfg.val, hashes=hashes)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def sample_seeds(seed: int, step: int, indices: torch.Tensor) -> list[int]:
    """One augmentation seed per sample, a function of (run seed, step, sample index) alone."""
    return [hash((seed, step, int(i))) % 2**63 for i in indices]


def augment(images: torch.Tensor, cfg: DataConfig, seeds: list[int]) -> torch.Tensor:
    """Random crop of ``crop_min``..1 of the side, resized to ``image_size``; random horizontal flip.

    Input uint8 NCHW; output float in [-1, 1]. Image i draws from a generator seeded with ``seeds[i]`` only.
    """
    n, _, h, w = images.shape
    side = min(h, w)
    out = []
    for i in range(n):
        frac, fy, fx, flip = torch.rand(4, generator=torch.Generator().manual_seed(seeds[i])).tolist()
        c = min(max(round((cfg.crop_min + (1 - cfg.crop_min) * frac) * side), 1), side)
        y0, x0 = int(fy * (h - c + 1)), int(fx * (w - c + 1))
        patch = images[i : i + 1, :, y0 : y0 + c, x0 : x0 + c].float()
        if c != cfg.image_size:
            patch = F.interpolate(patch, size=(cfg.image_size,) * 2, mode="bilinear", antialias=True,
                                  align_corners=False)
        if cfg.hflip and flip < 0.5:
            patch = patch.flip(-1)
        out.append(patch)
    return torch.cat(out).div_(127.5).sub_(1.0).clamp_(-1, 1)


def endless(loader: Any):
    """Batches across epochs; the loader's own state tracks the epoch and the position in it."""
    while True:
        yield from loader
