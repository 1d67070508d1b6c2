"""Activation checkpointing, per-block compile and FSDP2 for any tokenizer family (torchtitan's order).

Units are what repeats: every Transformer block and every CNN residual block. Each unit is checkpointed
(when asked), compiled (when asked) and sharded on its own, then the root takes what is left (stems,
projections, quantiser, norms), so at most one unit's parameters are gathered at a time.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper, checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from scaling.config import ParallelConfig
from scaling.models.transformer import Transformer, TransformerBlock
from scaling.models.vqgan import ResBlock

UNIT_TYPES = (TransformerBlock, ResBlock)


def is_unit(module: nn.Module) -> bool:
    inner = module._checkpoint_wrapped_module if isinstance(module, CheckpointWrapper) else module
    return isinstance(inner, UNIT_TYPES)


def units(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks, outermost wrapper included, in module order."""
    wrapped = {id(m._checkpoint_wrapped_module) for m in model.modules() if isinstance(m, CheckpointWrapper)}
    return [m for m in model.modules() if is_unit(m) and id(m) not in wrapped]


def apply_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """``full``: every unit recomputed in backward. ``selective``: torchtitan's op-level policy (keep matmul
    and attention outputs every other time) on Transformer blocks; CNN blocks are recomputed whole."""
    from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC

    policy = SelectiveAC(SelectiveAC.Config(force_recompute_mm_shapes_by_fqns=[])) if mode == "selective" \
        else FullAC(FullAC.Config())
    for module in list(model.modules()):
        if isinstance(module, Transformer):
            policy.apply(module)  # torchtitan wraps each of ``module.layers``
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ResBlock):
                parent.register_module(name, checkpoint_wrapper(child, preserve_rng_state=False))


def apply_compile(model: nn.Module) -> None:
    """Compile each unit: the repeated structure compiles once and is reused."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for unit in units(model):
        unit.compile(fullgraph=True)


def parallelize_tokenizer(model: nn.Module, cfg: ParallelConfig, mesh: DeviceMesh, *,
                          param_dtype: torch.dtype = torch.float32) -> nn.Module:
    """Checkpoint, compile and shard ``model`` in place (its parameters become DTensors on ``mesh``)."""
    if cfg.activation_checkpoint != "none":
        apply_activation_checkpointing(model, cfg.activation_checkpoint)
    if cfg.compile:
        apply_compile(model)
    shard(model, mesh, param_dtype=param_dtype, reshard_after_forward=cfg.reshard_after_forward)
    return model


def shard(model: nn.Module, mesh: DeviceMesh, *, param_dtype: torch.dtype = torch.float32,
          reshard_after_forward: bool = True) -> FSDPModule:
    """FSDP2 per unit, then the root; units compute with ``param_dtype`` parameters, gradients are reduced in
    fp32. The root keeps fp32 parameters (autocast still runs its matmuls in bf16): the codebook's distances
    and the quantiser's argmin need them."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for unit in units(model):
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    root = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    fully_shard(model, mesh=mesh, mp_policy=root, reshard_after_forward=reshard_after_forward)
    return model  # type: ignore[return-value]
