"""An exponential moving average of the generator's parameters, kept in the parameters' own (sharded) layout.

Each rank averages its own shards, so the EMA costs one parameter shard of memory and no communication; it
is checkpointed and resharded like the parameters (a dict keyed by parameter name).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params = {name: p.detach().clone() for name, p in _named(model)}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        names = list(self.params)
        live = dict(_named(model))
        torch._foreach_lerp_([self.params[n] for n in names], [live[n].detach() for n in names], 1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.params

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, tensor in self.params.items():
                tensor.copy_(state[name])

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with the EMA weights for the duration (e.g. validation), its own weights afterwards."""
        live = dict(_named(model))
        saved = {n: p.detach().clone() for n, p in live.items()}
        with torch.no_grad():
            for n, p in live.items():
                p.copy_(self.params[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in live.items():
                    p.copy_(saved[n])


def _named(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Parameter names without activation-checkpoint wrapper prefixes, as in the model's state dict."""
    for name, p in model.named_parameters():
        yield name.replace("_checkpoint_wrapped_module.", ""), p
