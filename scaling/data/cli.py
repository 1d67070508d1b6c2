"""``scaling data synth|convert|verify``: write datasets as MDS shards, and hash-check them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="write datasets as MDS shards").add_subparsers(dest="data_cmd", required=True)

    p = data.add_parser("synth", help="write the procedural class-labelled dataset")
    p.add_argument("out", type=Path)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train", type=int, default=2000, help="training images")
    p.add_argument("--val", type=int, default=256, help="validation images")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.set_defaults(func=_synth)

    p = data.add_parser("convert", help="convert an ImageFolder tree (ImageNet layout) to MDS")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--val-fraction", type=float, default=0.02,
                   help="held out when SRC has no train/ and val/ folders")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.set_defaults(func=_convert)

    p = data.add_parser("verify", help="hash-check a split's shards against its index and record the result")
    p.add_argument("split", help="a split directory (its index.json and shards)")
    p.set_defaults(func=_verify)


def _synth(args: argparse.Namespace) -> int:
    from scaling.data.build import build_synthetic
    from scaling.core.errors import UserError

    for key in ("classes", "train", "val", "size"):
        if getattr(args, key) <= 0:
            raise UserError(f"--{key}: must be positive, got {getattr(args, key)}")
    out = build_synthetic(args.out, num_classes=args.classes, train=args.train, val=args.val, size=args.size,
                          seed=args.seed, workers=args.workers)
    print(f"dataset: {out} (train/ and val/ MDS splits)")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from scaling.data.build import convert_image_folder

    out = convert_image_folder(args.src, args.out, size=args.size, val_fraction=args.val_fraction,
                               workers=args.workers)
    print(f"dataset: {out} (train/ and val/ MDS splits)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from scaling.data.mds import verify_split

    count = verify_split(args.split, hashes=True, force=True)
    print(f"data split {args.split}: {count} shards match their index's sizes and hashes (recorded; starts trust it "
          "while the shards are unchanged)")
    return 0
