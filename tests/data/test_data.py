"""Datasets as MDS: deterministic synthesis, ImageFolder conversion, shard verification, exact resume."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scaling.core.config import DataConfig
from scaling.data import synth
from scaling.cli import main
from scaling.data.build import build_synthetic, convert_image_folder
from scaling.data.mds import VERIFIED, verify_split
from scaling.data.loader import (PREFIX_LOCK, augment, check_splits, sample_seeds, train_loader,
                                 validation_images, validation_stream)
from scaling.core.errors import UserError
from tests.helpers import REPO


def test_synthetic_samples_are_deterministic_and_class_dependent() -> None:
    styles = synth.class_styles(10, seed=3)
    a, la = synth.sample(5, 7, styles, 32)
    b, lb = synth.sample(5, 7, styles, 32)
    assert np.array_equal(a, b) and la == lb
    c, _ = synth.sample(6, 7, styles, 32)
    assert not np.array_equal(a, c)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    big, _ = synth.sample(5, 7, styles, 96)  # any resolution
    assert big.shape == (96, 96, 3)
    labels = [synth.sample(i, 1, styles, 16)[1] for i in range(400)]
    counts = np.bincount(labels, minlength=10)
    assert counts.min() > 20  # every class present, roughly balanced
    assert len({(s.shape, s.texture) for s in styles}) == 10  # each class its own shape+texture


def test_synth_writes_identical_shards_for_the_same_seed(tmp_path: Path) -> None:
    a = build_synthetic(tmp_path / "a", train=40, val=8, size=16, seed=1, workers=1, progress=False)
    b = build_synthetic(tmp_path / "b", train=40, val=8, size=16, seed=1, workers=2, progress=False)
    for split in ("train", "val"):
        va, la = validation_images(DataConfig(train="x", val=str(a / split), image_size=16, val_samples=100), tmp_path)
        vb, lb = validation_images(DataConfig(train="x", val=str(b / split), image_size=16, val_samples=100), tmp_path)
        assert torch.equal(va, vb) and torch.equal(la, lb)
    assert len(va) == 8
    # A second call on a complete dataset is a no-op (the study re-runs it).
    stamp = (a / "dataset.json").stat().st_mtime_ns
    build_synthetic(tmp_path / "a", train=40, val=8, size=16, seed=1, workers=1, progress=False)
    assert (a / "dataset.json").stat().st_mtime_ns == stamp


def test_convert_image_folder_keeps_labels_and_resizes(tmp_path: Path) -> None:
    src = tmp_path / "imagenet"
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("val", 2)):
        for cls, colour in (("n01", (255, 0, 0)), ("n02", (0, 0, 255))):
            folder = src / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = int(rng.integers(40, 80)), int(rng.integers(40, 80))
                Image.new("RGB", (w, h), colour).save(folder / f"{i}.JPEG")
    out = convert_image_folder(src, tmp_path / "mds", size=32, workers=2, progress=False)
    assert json.loads((out / "classes.json").read_text()) == ["n01", "n02"]
    images, labels = validation_images(DataConfig(train="x", val=str(out / "val"), image_size=32, val_samples=10),
                                       tmp_path)
    assert images.shape == (4, 3, 32, 32)
    for img, label in zip(images, labels):
        red, blue = img[0].float().mean(), img[2].float().mean()
        assert (red > blue) == (label == 0)
    with pytest.raises(UserError, match="exists and is not empty"):
        convert_image_folder(src, out, size=32, workers=1, progress=False)


def test_synth_never_replaces_another_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = build_synthetic(tmp_path / "d", train=40, val=8, size=16, seed=0, workers=1, progress=False)
    index = (root / "train" / "index.json").read_bytes()
    capsys.readouterr()
    assert main(["data", "synth", str(root), "--train", "48", "--val", "8", "--size", "16", "--workers", "1"]) == 2
    assert capsys.readouterr().err.strip() == (f"scaling: error: data output {root}: holds another dataset "
                                               "(train=40, not train=48); choose another path or remove it")
    assert (root / "train" / "index.json").read_bytes() == index
    assert main(["data", "synth", str(root), "--train", "40", "--val", "8", "--size", "16", "--workers", "1"]) == 0


def test_a_data_output_that_is_a_file_is_one_line_and_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    (tmp_path / "src" / "n01").mkdir(parents=True)
    for args in (["synth", str(out), "--train", "8", "--val", "4", "--size", "8", "--workers", "1"],
                 ["convert", str(tmp_path / "src"), str(out), "--size", "8", "--workers", "1"]):
        capsys.readouterr()
        assert main(["data", *args]) == 2
        assert capsys.readouterr().err.strip() == \
            f"scaling: error: data output: {out} exists and is not a directory"
        assert out.read_text() == "mine"


def _corrupt(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_or_missing_shards_are_named(tmp_path: Path) -> None:
    root = build_synthetic(tmp_path / "d", train=40, val=8, size=16, seed=0, workers=1, progress=False)
    cfg = DataConfig(train=str(root / "train"), val=str(root / "val"), image_size=16)
    check_splits(cfg)
    shard = next((root / "train").rglob("*.mds"))
    _corrupt(shard, shard.stat().st_size // 2)
    with pytest.raises(UserError, match=rf"data shard {shard}: corrupt, xxh64 hash"):
        check_splits(cfg)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UserError, match=rf"data shard {shard}: corrupt, \d+ bytes where the index says"):
        check_splits(cfg)
    shard.unlink()
    with pytest.raises(UserError, match=rf"data shard {shard}: missing"):
        check_splits(cfg)
    with pytest.raises(UserError, match="directory not found"):
        check_splits(DataConfig(train=str(tmp_path / "nope"), val=str(root / "val")))


def _garble_keeping_size_and_time(shard: Path) -> None:
    """Other bytes of the same length, the modification time put back: what a verification record cannot see."""
    st = shard.stat()
    shard.write_bytes(np.random.default_rng(0).integers(0, 256, st.st_size, dtype=np.uint8).tobytes())
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_verified_split_is_trusted_until_a_shard_changes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Writing a split hash-checks it once and records that; a start then reads no shard's contents (a shard
    garbled behind the record's back passes the check), until a shard's size or time changes. Reading the garbled
    shard is one line naming it; ``scaling data verify`` hash-checks whatever is recorded."""
    root = build_synthetic(tmp_path / "d", train=40, val=8, size=16, seed=0, workers=1, progress=False)
    cfg = DataConfig(train=str(root / "train"), val=str(root / "val"), image_size=16)
    assert (root / "train" / VERIFIED).is_file() and (root / "val" / VERIFIED).is_file()
    shard = next((root / "val").rglob("*.mds"))
    _garble_keeping_size_and_time(shard)
    check_splits(cfg)  # trusted: not one shard byte read
    with pytest.raises(UserError, match=rf"^data shard {shard}: corrupt, sample 0 cannot be read \("):
        validation_stream(cfg, tmp_path / "cache")[0]

    assert main(["data", "verify", str(root / "val")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"scaling: error: data shard {shard}: corrupt, xxh64 hash does not match the index"
    os.utime(shard)  # touched: the record no longer holds
    with pytest.raises(UserError, match=rf"data shard {shard}: corrupt, xxh64 hash"):
        check_splits(cfg)
    assert main(["data", "verify", str(root / "train")]) == 0
    assert "1 shards match" in capsys.readouterr().out


def test_only_rank_0_hashes_the_others_wait_for_its_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_synthetic(tmp_path / "d", train=40, val=8, size=16, seed=0, workers=1, progress=False)
    split = root / "train"
    monkeypatch.setenv("RANK", "1")
    _garble_keeping_size_and_time(next(split.rglob("*.mds")))
    assert verify_split(str(split), hashes=True) == 1  # recorded: rank 1 reads nothing either
    (split / VERIFIED).unlink()
    with pytest.raises(UserError, match=rf"data split {split}: rank 0 did not record its verification within 0.5 s"):
        verify_split(str(split), hashes=True, wait_s=0.5)

    clean = build_synthetic(tmp_path / "e", train=40, val=8, size=16, seed=0, workers=1, progress=False) / "train"
    (clean / VERIFIED).unlink()
    rank0 = threading.Timer(1.0, verify_split, [str(clean)], {"hashes": True, "force": True})
    rank0.start()
    t0 = time.monotonic()
    assert verify_split(str(clean), hashes=True, wait_s=30) == 1  # returns once rank 0 has recorded
    assert time.monotonic() - t0 >= 0.9 and (clean / VERIFIED).is_file()
    rank0.join()


def test_a_split_whose_directory_takes_no_record_is_recorded_in_the_user_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = build_synthetic(tmp_path / "d", train=40, val=8, size=16, seed=0, workers=1, progress=False)
    split = root / "train"
    (split / VERIFIED).unlink()
    (split / VERIFIED).mkdir()  # where the record would go, something that cannot be replaced by a file
    verify_split(str(split), hashes=True)
    (record,) = (tmp_path / "cache" / "scaling" / "verified").iterdir()
    _garble_keeping_size_and_time(next(split.rglob("*.mds")))
    verify_split(str(split), hashes=True)  # trusted from the cache
    record.unlink()
    with pytest.raises(UserError, match="xxh64 hash does not match"):
        verify_split(str(split), hashes=True)


def _labels_and_sums(batches) -> list[tuple[int, int]]:
    return [(int(l), int(x.sum())) for images, labels, _ in batches for x, l in zip(images, labels)]


def test_loader_resumes_mid_epoch_and_across_epochs_without_replay_or_skip(synth_data: Path, tmp_path: Path) -> None:
    cfg = DataConfig(train=str(synth_data / "train"), val=str(synth_data / "val"), image_size=32)
    per_epoch = 600 // 32  # drop_last

    def stream(loader, n):
        out = []
        while len(out) < n:
            for batch in loader:
                out.append(batch)
                if len(out) == n:
                    break
        return out

    full = train_loader(cfg, 32, seed=4, cache_root=tmp_path)
    reference = []
    for _ in range(2):  # two whole epochs
        reference += list(full)
    assert len(reference) == 2 * per_epoch
    first_epoch = _labels_and_sums(reference[:per_epoch])
    assert len(set(first_epoch)) > 0.9 * len(first_epoch)  # a permutation, not repeats
    assert _labels_and_sums(reference[per_epoch:]) != first_epoch  # reshuffled each epoch

    cut = per_epoch - 3  # stop 3 batches before the epoch ends
    head_loader = train_loader(cfg, 32, seed=4, cache_root=tmp_path)
    head = stream(head_loader, cut)
    state = head_loader.state_dict()
    del head_loader
    tail_loader = train_loader(cfg, 32, seed=4, cache_root=tmp_path)
    tail_loader.load_state_dict(state)
    tail = list(tail_loader) + list(tail_loader)  # rest of epoch 0, then all of epoch 1
    assert _labels_and_sums(head + tail) == _labels_and_sums(reference)


def test_augment_is_a_pure_function_of_each_samples_seed() -> None:
    cfg = DataConfig(train="x", val="y", image_size=24, crop_min=0.8)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    seeds = sample_seeds(9, step=3, indices=torch.arange(6))
    a, b = augment(images, cfg, seeds), augment(images, cfg, seeds)
    assert torch.equal(a, b) and a.shape == (6, 3, 24, 24)
    assert a.min() >= -1 and a.max() <= 1
    # A sample's crop follows the sample, not its place in the batch or who else is in it (any rank split).
    order = torch.tensor([4, 0, 5])
    assert torch.equal(augment(images[order], cfg, [seeds[i] for i in order]), a[order])
    assert not torch.equal(augment(images, cfg, sample_seeds(9, step=4, indices=torch.arange(6))), a)


def test_streams_open_one_at_a_time_on_a_machine(synth_data: Path) -> None:
    """Streaming picks a free shared-memory prefix, then creates it; two processes doing so at once took the same
    one and the later failed (a study's trial died in its probe with FileExistsError). While another process holds
    the machine's prefix lock, opening a stream waits; once it is released, the stream opens."""
    code = ("from scaling.data.loader import open_stream\n"
            f"print('ready', flush=True)\nprint(len(open_stream(local={str(synth_data / 'val')!r})), flush=True)")
    with open(PREFIX_LOCK, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(2)
        assert proc.poll() is None, "the stream opened while another process held the lock"
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and int(out) == 128
