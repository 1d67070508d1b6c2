"""What a checkpoint holds besides the modules and optimisers: the step, the data stream's position, the RNG
state and the metric points not yet sent; saving and resuming it with a ``CheckpointStore``. Used by the
tokenizer trainer and the probe's GPT trainer alike."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from scaling.core.checkpoint import CheckpointStore
from scaling.core.runtime import Runtime


class PendingMetrics(Protocol):
    """What a checkpoint needs of a tracker (``tracking.Tracker``): send what it can, keep what it could not."""

    def flush(self) -> None: ...

    def pending(self) -> Any: ...


def resume(store: CheckpointStore, stateful: dict[str, Any], loader: Any, rt: Runtime
           ) -> tuple[int, dict[str, Any] | None]:
    """Load the latest complete checkpoint in place (DCP reshards it to this world size); (step, train state)."""
    latest = rt.broadcast_object(store.latest())
    if latest is None:
        return 0, None
    return _load(store, latest, stateful, loader)


def branch(trunk: CheckpointStore, step: int, stateful: dict[str, Any], loader: Any) -> tuple[int, dict[str, Any]]:
    """Load the trunk's checkpoint at ``step`` in place, as ``resume`` would; the metric points the trunk had not
    sent yet are its own, not the branch's."""
    step, train_state = _load(trunk, step, stateful, loader)
    return step, train_state | {"tracker_pending": {}}


def _load(store: CheckpointStore, step: int, stateful: dict[str, Any], loader: Any) -> tuple[int, dict[str, Any]]:
    keys = store.keys(step)
    for name, value in stateful.items():  # a checkpoint written before param groups were packed loads as written
        if isinstance(value, OptimizerState):
            value.packed = f"{name}.{OptimizerState.GROUPS}" in keys
    loaded = stateful | {"train": b""}  # one pickled value: DCP would flatten a dict, dropping empty parts
    store.load(step, loaded)  # in place; plain values are replaced in ``loaded``
    train_state = pickle.loads(loaded["train"])
    loader.load_state_dict(train_state["loader"])
    set_rng_state(train_state["rng"])
    return train_state["step"], train_state


def save(store: CheckpointStore, step: int, stateful: dict[str, Any], loader: Any, tracker: PendingMetrics,
         rt: Runtime, blocking: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """A collective checkpoint of ``stateful`` plus the run's own state: step, data position, RNG, the
    metric points not yet sent (so no point is lost), and ``extra`` (the caller's own totals)."""
    tracker.flush()
    # Rank 0's view of the run's own state, the same bytes on every rank (DCP keeps one copy).
    train_state = rt.broadcast_object({"step": step, "loader": loader.state_dict(), "rng": get_rng_state(),
                                       "tracker_pending": tracker.pending(), **(extra or {})})
    return store.save(step, stateful | {"train": pickle.dumps(train_state)}, blocking=blocking)


class ModuleState:
    """A (sharded) module as a DCP ``Stateful``: parameters keyed by name, without wrapper prefixes."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.module)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.module, state)


class OptimizerState:
    """An optimiser container (torchtitan's: its state keyed by parameter name, so it reshards) as a DCP
    ``Stateful`` whose param-group settings, which the flat state dict repeats for every parameter (lr, betas, eps
    and 9 more), travel as one pickled value instead of 12 checkpoint items per parameter: 1,596 items fewer for
    the tiny config, tens of thousands for the largest presets. ``packed = False`` reads checkpoints written
    before."""

    GROUPS = "param_groups"

    def __init__(self, optimizers: Any):
        self.optimizers, self.packed = optimizers, True

    def state_dict(self) -> dict[str, Any]:
        flat = self.optimizers.state_dict()
        if not self.packed:
            return flat
        groups = {k: v for k, v in flat.items() if k.startswith(self.GROUPS + ".")}
        return {k: v for k, v in flat.items() if k not in groups} | {self.GROUPS: pickle.dumps(groups)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if self.packed:
            state |= pickle.loads(state.pop(self.GROUPS))
        self.optimizers.load_state_dict(state)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
