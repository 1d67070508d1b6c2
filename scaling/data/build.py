"""Build datasets as MDS: the procedural synthetic set, or an ImageFolder tree (ImageNet layout)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from scaling.data import mds, synth
from scaling.core.errors import UserError
from scaling.core.paths import check_dir_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG"}


def _synth_item(index: int, *, split_seed: int, styles: tuple, size: int):
    return synth.sample(index, split_seed, list(styles), size)


def build_synthetic(
    out: Path, *, num_classes: int = 10, train: int = 2000, val: int = 256, size: int = 32, seed: int = 0,
    workers: int = 1, progress: bool = True,
) -> Path:
    """Write the synthetic dataset to ``out`` unless an identical one is already complete there."""
    meta = {"kind": "synthetic", "num_classes": num_classes, "train": train, "val": val, "size": size, "seed": seed}
    check_dir_path(out, "data output")
    if mds.is_complete(out, meta):
        return out
    if (out / "dataset.json").is_file():  # another complete dataset: never replaced
        other = json.loads((out / "dataset.json").read_text())
        diff = ", ".join(f"{k}={other.get(k)!r}" for k in meta if other.get(k) != meta[k])
        want = ", ".join(f"{k}={meta[k]!r}" for k in meta if other.get(k) != meta[k])
        raise UserError(f"data output {out}: holds another dataset ({diff}, not {want}); choose another path or "
                        f"remove it")
    if out.exists() and any(out.iterdir()) and not (out / "dataset.json").exists() and not _is_partial_synth(out):
        raise UserError(f"data output {out}: exists and is not a dataset written by scaling; choose another path")
    styles = tuple(synth.class_styles(num_classes, seed))
    for split, count, split_seed in (("train", train, seed * 2 + 1), ("val", val, seed * 2 + 2)):
        make = functools.partial(_synth_item, split_seed=split_seed, styles=styles, size=size)
        with tqdm(total=count, desc=f"synth {split}", disable=not progress, unit="img") as bar:
            mds.write_split(out / split, range(count), make, workers=workers, lossless=True, progress=bar.update)
    names = [f"{s.shape}-{s.texture}-{i}" for i, s in enumerate(styles)]
    (out / "classes.json").write_text(json.dumps(names))
    mds.mark_complete(out, meta)
    return out


def _is_partial_synth(out: Path) -> bool:
    return {p.name for p in out.iterdir()} <= {"train", "val", "classes.json", "dataset.json.tmp"}


def _load_resized(item: tuple[str, int], *, size: int) -> tuple[Image.Image, int]:
    """Resize the short side to ``size`` and centre-crop a square; training crops further."""
    path, label = item
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except OSError as e:
        raise UserError(f"image {path}: cannot be read ({e})") from None
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size)), label


def _image_folder(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, label) pairs of an ImageFolder tree, labels by sorted class-folder name."""
    if classes is None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"image folder {root}: no class sub-directories")
    items = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise UserError(f"image folder {root}: class {name!r} of the training split has no folder here")
        items += [(str(p), label) for p in sorted(folder.iterdir()) if p.suffix in IMAGE_SUFFIXES]
    return items, classes


def convert_image_folder(
    src: Path, out: Path, *, size: int = 256, val_fraction: float = 0.02, workers: int | None = None,
    seed: int = 0, progress: bool = True,
) -> Path:
    """ImageFolder tree -> MDS. ``src/train`` + ``src/val`` are used when present; else ``val_fraction``
    of ``src`` is held out (a fixed, seeded choice)."""
    import numpy as np

    if not src.is_dir():
        raise UserError(f"image folder {src}: not found")
    check_dir_path(out, "data output")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"data output {out}: exists and is not empty; choose another path")
    workers = workers or os.cpu_count() or 1
    if (src / "train").is_dir() and (src / "val").is_dir():
        train_items, classes = _image_folder(src / "train")
        val_items, _ = _image_folder(src / "val", classes)
    else:
        items, classes = _image_folder(src)
        held = np.random.default_rng(seed).random(len(items)) < val_fraction
        train_items = [it for it, h in zip(items, held) if not h]
        val_items = [it for it, h in zip(items, held) if h]
    make = functools.partial(_load_resized, size=size)
    for split, items in (("train", train_items), ("val", val_items)):
        if not items:
            raise UserError(f"image folder {src}: the {split} split has no images")
        with tqdm(total=len(items), desc=f"convert {split}", disable=not progress, unit="img") as bar:
            mds.write_split(out / split, items, make, workers=workers, lossless=False, progress=bar.update)
    (out / "classes.json").write_text(json.dumps(classes))
    mds.mark_complete(out, {"kind": "image-folder", "src": str(src), "size": size, "classes": len(classes)})
    return out
