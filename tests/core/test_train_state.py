"""The optimiser in a checkpoint: its param-group settings travel as one value (not 12 items per parameter), it
loads back exactly, and a checkpoint written before they were packed still loads."""

from __future__ import annotations

from pathlib import Path

import torch

from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import OptimConfig
from scaling.core.train_state import OptimizerState, _load
from scaling.optim.optimizer import build_optimizer


class _Loader:
    def load_state_dict(self, state: object) -> None:
        self.state = state


def _trained(seed: int, lr: float) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt, _ = build_optimizer(model, OptimConfig(), lr, 10, torch.device("cpu"))
    for _ in range(2):
        model(torch.randn(3, 4)).square().sum().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(store: CheckpointStore, opt: object, packed: bool) -> None:
    import pickle

    state = OptimizerState(opt)
    state.packed = packed
    store.save(1, {"opt": state, "train": pickle.dumps({"step": 1, "loader": {}, "rng": _rng()})}, blocking=True)


def _rng() -> dict:
    from scaling.core.train_state import get_rng_state

    return get_rng_state()


def test_param_groups_are_one_item_and_load_back_exactly(tmp_path: Path) -> None:
    for packed in (True, False):  # now, and as checkpoints were written before
        store = CheckpointStore(tmp_path / str(packed) / "checkpoints")
        _, opt = _trained(0, 1e-3)
        _save(store, opt, packed)
        groups = [k for k in store.keys(1) if k.startswith("opt.param_groups")]
        assert len(groups) == (1 if packed else 12 * 4), (packed, len(groups))  # 4 parameters, 12 settings each
        _, fresh = _trained(1, 5e-4)  # other values everywhere, the learning rate too
        _load(store, 1, {"opt": OptimizerState(fresh)}, _Loader())
        want, got = opt.state_dict(), fresh.state_dict()
        assert want.keys() == got.keys() and {v for k, v in got.items() if k.endswith(".lr")} == {1e-3}
        for key in want:
            assert torch.equal(want[key], got[key]) if isinstance(want[key], torch.Tensor) else want[key] == got[key], key
