"""The checkpoint store's background writes (``train.async_checkpoint``): a save returns before its write is
done, what lands is the state at the save (not what the tensors hold later), checkpoints land in step order and
a pending write is never listed as a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from scaling.core.checkpoint import CheckpointStore, read_checkpoint


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
