"""Start-up cost of a training run's data check against the split's size: ``check_splits`` (what every start, rank
and requeue runs) on a small and a large synthetic split, with the page cache dropped before each timing where the
machine allows it (root on Linux), so a shard read is a disk read.

    python benchmarks/data_startup.py --small 2000 --large 100000 --size 64 --root /tmp/startup

Prints, per split: its bytes, the first check (hashes every shard: what every start did before verification was
recorded), and a start once it is recorded (sizes and times only).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from scaling.core.config import DataConfig
from scaling.data.build import build_synthetic
from scaling.data.loader import check_splits
from scaling.data.mds import VERIFIED


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed_check(cfg: DataConfig) -> float:
    dropped = drop_page_cache()
    t0 = time.perf_counter()
    check_splits(cfg)
    return time.perf_counter() - t0 if dropped else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=2000)
    p.add_argument("--large", type=int, default=100_000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--root", type=Path, default=Path("/tmp/scaling-startup"))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    for n in (args.small, args.large):
        root = build_synthetic(args.root / f"synth-{n}-{args.size}", num_classes=10, train=n, val=256, size=args.size,
                               seed=0, workers=args.workers, progress=False)
        cfg = DataConfig(train=str(root / "train"), val=str(root / "val"), image_size=args.size)
        nbytes = sum(f.stat().st_size for f in root.rglob("*.mds"))
        for split in ("train", "val"):
            (root / split / VERIFIED).unlink(missing_ok=True)
        unrecorded = timed_check(cfg)
        recorded = timed_check(cfg)
        print(f"{n} images at {args.size}x{args.size} ({nbytes / 1e6:.1f} MB of shards): first check {unrecorded:.3f} s "
              f"(hashes every shard), a start once recorded {recorded:.4f} s (page cache dropped before each)")


if __name__ == "__main__":
    main()
