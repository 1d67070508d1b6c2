"""AdamW and its LR schedule as torchtitan containers (state keyed by parameter name: it reshards with the
parameters), and gradient clipping that works on sharded parameters."""

from __future__ import annotations

from typing import Any

import torch

from scaling.core.config import OptimConfig
from scaling.optim.schedule import lr_multiplier


def build_optimizer(module: torch.nn.Module, optim: OptimConfig, lr: float, steps: int,
                    device: torch.device) -> tuple[Any, Any]:
    """AdamW and the step schedule as torchtitan containers: their state dicts are keyed by parameter name,
    so they reshard with the parameters."""
    from torchtitan.components.optimizer import OptimizersContainer
    from torchtitan.components.optimizer.lr_scheduler import LRSchedulersContainer
    from torchtitan.components.optimizer.optimizer import ParamGroupConfig

    kwargs = {"lr": lr, "betas": tuple(optim.betas), "weight_decay": optim.weight_decay, "eps": 1e-8}
    config = OptimizersContainer.Config(
        param_groups=[ParamGroupConfig(pattern=".*", optimizer_name="AdamW", optimizer_kwargs=kwargs)],
        implementation="fused" if device.type == "cuda" else "for-loop")  # one kernel set for all params
    optimizers = OptimizersContainer(config, model_parts=[module])
    return optimizers, LRSchedulersContainer(optimizers, lr_multiplier(optim, steps))


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    from torchtitan.distributed.utils import clip_grad_norm_

    return clip_grad_norm_(list(model.parameters()), max_norm, foreach=True)
