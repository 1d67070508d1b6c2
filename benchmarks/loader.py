"""The data path at real size: how many 256x256 images per second the loader's workers decode, and what the
augmentation (crop, resize, flip) costs, so that ``data.num_workers`` can be sized against a GPU's demand.

    python benchmarks/loader.py --images 2048 --size 256 --workers 0 1 2 --root /tmp/loader-bench
    python benchmarks/loader.py --preset gigatok-b-l --mfu 0.4 --peak-tflops 989   # the demand side too

The split is written as ``scaling data convert`` writes one (JPEG in MDS shards) from procedural images.
Printed: images/s of the StreamingDataLoader alone (decode, collate) for each worker count, and per worker;
augmentation images/s on one CPU core (what ran on the training thread before it moved to the device); and, for
``--preset``, the images/s one GPU consumes at the given MFU (``scaling plan``'s FLOPs per training image) and
the workers per GPU that keep it fed.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

import torch

from scaling.core.config import DataConfig
from scaling.data import mds, synth
from scaling.data.loader import augment, sample_seeds, train_loader


def build(root: Path, n: int, size: int, workers: int) -> Path:
    split = root / f"jpeg-{n}-{size}" / "train"
    if not (split / mds.VERIFIED).is_file():
        styles = tuple(synth.class_styles(10, 0))
        make = functools.partial(_item, styles=styles, size=size)
        mds.write_split(split, range(n), make, workers=workers, lossless=False)
    return split


def _item(index: int, *, styles: tuple, size: int):
    return synth.sample(index, 1, list(styles), size)


def loader_rate(split: Path, size: int, workers: int, batch: int, batches: int, cache: Path) -> float:
    cfg = DataConfig(train=str(split), val=str(split), image_size=size, num_workers=workers)
    loader = train_loader(cfg, batch, seed=0, cache_root=cache)
    seen, t0 = 0, None
    for images, _, _ in loader:
        if t0 is None:  # the first batch pays the workers' start-up
            t0 = time.perf_counter()
            continue
        seen += len(images)
        if seen >= batches * batch:
            break
    return seen / (time.perf_counter() - t0)


def augment_rate(split: Path, size: int, batch: int, cache: Path) -> float:
    cfg = DataConfig(train=str(split), val=str(split), image_size=size)
    images, _, indices = next(iter(train_loader(cfg, batch, seed=0, cache_root=cache)))
    torch.set_num_threads(1)
    t0, rounds = time.perf_counter(), 5
    for step in range(rounds):
        augment(images, cfg, sample_seeds(0, step, indices))
    return rounds * batch / (time.perf_counter() - t0)


def gpu_demand(preset: str, mfu: float, peak_tflops: float) -> float:
    from scaling.core.config import read_config
    from scaling.plan.count import plan

    per_image = plan(read_config(preset)).flops_per_training_image
    return mfu * peak_tflops * 1e12 / per_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", type=Path, default=Path("/tmp/scaling-loader-bench"))
    p.add_argument("--preset", default="")
    p.add_argument("--mfu", type=float, default=0.4)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    args = p.parse_args()
    split = build(args.root, args.images, args.size, min(4, os.cpu_count() or 1))
    per_worker = 0.0
    for w in args.workers:
        rate = loader_rate(split, args.size, w, args.batch, args.batches, args.root / f"cache-{w}")
        per = rate / max(w, 1)
        per_worker = max(per_worker, per) if w else per_worker
        print(f"loader, {w} workers: {rate:.0f} images/s ({per:.0f} per {'worker' if w else 'main thread'})")
    aug = augment_rate(split, args.size, args.batch, args.root / "cache-aug")
    print(f"augmentation on one CPU core: {aug:.0f} images/s ({1e3 / aug:.2f} ms per image)")
    if args.preset:
        demand = gpu_demand(args.preset, args.mfu, args.peak_tflops)
        print(f"{args.preset} at {args.mfu:.0%} MFU of {args.peak_tflops:g} TFLOP/s: {demand:.0f} images/s per GPU; "
              f"{demand / per_worker:.1f} workers per GPU at {per_worker:.0f} images/s each")


if __name__ == "__main__":
    main()
