"""The checkpoint store's background writes (``train.async_checkpoint``): a save returns before its write is
done, what lands is the state at the save (not what the tensors hold later), checkpoints land in step order and
a pending write is never listed as a checkpoint; a checkpoint damaged on disk is named in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling.core.checkpoint import CheckpointStore, read_checkpoint
from scaling.core.errors import UserError


def test_async_save_lands_the_state_of_its_step(tmp_path: Path) -> None:
    landed: list[Path] = []
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=5, async_save=True, on_saved=landed.append)
    weight = torch.arange(1 << 22, dtype=torch.float32)  # 16 MB: its write outlasts the in-place change below
    store.save(1, {"w": weight, "step": 1})
    assert store.steps() == [] and landed == []  # in flight: not a checkpoint yet
    weight.mul_(-1)  # training goes on and changes the tensor in place
    store.save(2, {"w": weight, "step": 2})  # lands step 1 first
    assert store.steps() == [1] and landed == [store.path(1)]
    store.wait()
    assert store.steps() == [1, 2] and landed == [store.path(1), store.path(2)]
    first, second = read_checkpoint(store.path(1)), read_checkpoint(store.path(2))
    assert torch.equal(first["w"], torch.arange(1 << 22, dtype=torch.float32)) and first["step"] == 1
    assert torch.equal(second["w"], -torch.arange(1 << 22, dtype=torch.float32)) and second["step"] == 2
    assert not list(store.root.glob("*.tmp"))


def test_blocking_save_lands_before_it_returns(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints", async_save=True)
    store.save(1, {"w": torch.ones(4)})
    store.save(2, {"w": torch.zeros(4)}, blocking=True)  # a preemption's or the run's last checkpoint
    assert store.steps() == [1, 2]


def test_a_damaged_checkpoint_is_one_line_naming_its_file(tmp_path: Path) -> None:
    """A complete checkpoint damaged on disk afterwards (a truncated shard file, a garbage ``.metadata``): reading
    it, for a resume or an export, names the file instead of DCP's traceback."""
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, {"w": torch.arange(1000, dtype=torch.float32), "step": 1}, blocking=True)
    path = store.path(1)
    (shard,) = path.glob("*.distcp")
    shard.write_bytes(shard.read_bytes()[:100])
    for read in (lambda: read_checkpoint(path), lambda: store.load(1, {"w": torch.empty(1000), "step": 0})):
        with pytest.raises(UserError, match=rf"^checkpoint shard {shard}: truncated, 100 bytes where its metadata "
                                            rf"needs \d+; remove {path} to resume from the checkpoint before it$"):
            read()
    (path / ".metadata").write_bytes(b"garbage")
    with pytest.raises(UserError, match=rf"^checkpoint {path / '.metadata'}: corrupt, unreadable"):
        read_checkpoint(path)
