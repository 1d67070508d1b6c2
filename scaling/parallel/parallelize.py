"""Activation checkpointing, per-block compile and FSDP2 for any tokenizer family (torchtitan's order).

Units are what repeats, as the model declares in ``unit_types`` (its Transformer blocks, its CNN residual
blocks). Each unit is checkpointed (when asked), compiled (when asked) and sharded on its own, then the root
takes what is left (stems, projections, quantiser, norms), so at most one unit's parameters are gathered at a time.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper, checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from scaling.core.config import ParallelConfig


def units(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks (instances of ``model.unit_types``), outermost wrapper included, in module order.
    A model that declares none (a discriminator) is one unit, the root."""
    types = getattr(model, "unit_types", ())
    wrapped = {id(m._checkpoint_wrapped_module) for m in model.modules() if isinstance(m, CheckpointWrapper)}
    return [m for m in model.modules() if isinstance(_unwrapped(m), types) and id(m) not in wrapped]


def _unwrapped(module: nn.Module) -> nn.Module:
    return module._checkpoint_wrapped_module if isinstance(module, CheckpointWrapper) else module


def apply_activation_checkpointing(model: nn.Module, mode: str) -> None:
    """``full``: every unit recomputed in backward. ``selective``: torchtitan's op-level policy (keep matmul
    and attention outputs every other time) on units stacked in a ``layers`` list (the Transformer blocks:
    torchtitan's policies wrap such a stack); other units (CNN blocks, no matmuls) are recomputed whole."""
    from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC

    policy = SelectiveAC(SelectiveAC.Config(force_recompute_mm_shapes_by_fqns=[])) if mode == "selective" \
        else FullAC(FullAC.Config())
    unit_ids = {id(u) for u in units(model)}
    for module in list(model.modules()):
        layers = getattr(module, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and all(id(layer) in unit_ids for layer in layers):
            policy.apply(module)  # torchtitan wraps each of ``module.layers``
    rest = {id(u) for u in units(model) if not isinstance(u, CheckpointWrapper)}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in rest:
                parent.register_module(name, checkpoint_wrapper(child, preserve_rng_state=False))


def apply_compile(model: nn.Module) -> None:
    """Compile each unit: the repeated structure compiles once and is reused."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for unit in units(model):
        unit.compile(fullgraph=True)


def memory_format(cfg: ParallelConfig) -> torch.memory_format:
    """The layout of the images a model takes: NHWC with ``parallel.channels_last``. An NHWC input is enough for
    cuDNN's NHWC kernels (each layer's output keeps the layout); the weights stay contiguous, as FSDP2 shards
    only contiguous parameters."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def float8_targets(model: nn.Module) -> list[nn.Module]:
    """The Linear layers float8 training converts: those of the units (the Transformer blocks; CNN blocks have
    none) whose two dimensions are multiples of 16 (float8 GEMMs need it). Stems, projections and the
    quantiser, in the root, stay as they are."""
    return [m for unit in units(model) for m in unit.modules()
            if isinstance(m, nn.Linear) and m.in_features % 16 == 0 and m.out_features % 16 == 0]


def apply_float8(model: nn.Module, cfg: ParallelConfig) -> int:
    """torchao's float8 training (``cfg.float8_recipe``) on ``float8_targets``, weights kept; the number of
    layers converted. Without ``float8_emulate`` it needs an NVIDIA GPU of compute capability 8.9 or later."""
    from scaling.core.errors import UserError

    device = next(model.parameters()).device
    if not cfg.float8_emulate and (device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9)):
        raise UserError(f"parallel.float8: needs an NVIDIA GPU of compute capability 8.9 or later (H100, H200); "
                        f"this run is on {device.type} (parallel.float8_emulate = true emulates it, for tests)")
    from dataclasses import replace

    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    config = Float8LinearConfig.from_recipe_name(cfg.float8_recipe)
    if cfg.float8_emulate:
        config = replace(config, emulate=True)
    targets = {id(m) for m in float8_targets(model)}
    convert_to_float8_training(model, config=config, module_filter_fn=lambda mod, fqn: id(mod) in targets)
    return len(targets)


def parallelize_tokenizer(model: nn.Module, cfg: ParallelConfig, mesh: DeviceMesh, *,
                          param_dtype: torch.dtype = torch.float32) -> nn.Module:
    """Float8, checkpoint, compile and shard ``model`` in place (its parameters become DTensors on ``mesh``,
    except on a world of one: see ``needs_fsdp``)."""
    if cfg.float8:
        apply_float8(model, cfg)
    if cfg.activation_checkpoint != "none":
        apply_activation_checkpointing(model, cfg.activation_checkpoint)
    if cfg.compile:
        apply_compile(model)
    shard(model, mesh, param_dtype=param_dtype, reshard_after_forward=cfg.reshard_after_forward)
    return model


def needs_fsdp(mesh: DeviceMesh) -> bool:
    """False on a world of one, where FSDP2 would shard nothing and reduce nothing: it would only copy (and,
    in bf16, cast) every parameter in and out of its buffers, one kernel per parameter, at each gather in the
    forward and the backward, and make each optimiser and clipping op a DTensor dispatch. On the H200 profile of
    GigaTok B-L's step that was 5,461 of its 7,833 kernels, with the GPU idle half the step; on the CPU a quarter
    of the tiny study's step. Such a model stays plain: in fp32 it computes the same, bitwise; in bf16 autocast
    casts each weight where it is used and norms stay in fp32. Its checkpoint is the same (DCP keys parameters and
    optimiser state by name and reshards plain tensors and DTensors alike, so it resumes on any world size)."""
    return mesh.size() > 1


def set_gradient_sync(module: nn.Module, sync: bool) -> None:
    """FSDP's ``set_requires_gradient_sync`` (reduce after the last micro-batch only); a plain module has none."""
    if isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(sync)


def shard(model: nn.Module, mesh: DeviceMesh, *, param_dtype: torch.dtype = torch.float32,
          reshard_after_forward: bool = True) -> nn.Module:
    """FSDP2 per unit, then the root; units compute with ``param_dtype`` parameters, gradients are reduced in
    fp32. The root keeps fp32 parameters (autocast still runs its matmuls in bf16): the codebook's distances
    and the quantiser's argmin need them. Unless ``needs_fsdp`` says otherwise: then ``model`` as it is."""
    if not needs_fsdp(mesh):
        return model
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for unit in units(model):
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    root = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    fully_shard(model, mesh=mesh, mp_policy=root, reshard_after_forward=reshard_after_forward)
    return model  # type: ignore[return-value]
