"""Per-GPU memory of FSDP2 training, planned on the meta device (nothing is allocated, any size).

What one GPU holds at the peak of a training step (the end of the forward / start of the backward):

- sharded state, 1/N of it per GPU: fp32 master weights (4 B/param), fp32 gradients (4 B/param, reduced in
  fp32), AdamW's exp_avg and exp_avg_sq (8 B/param);
- gathered parameters (bf16, transient): the root unit stays gathered from forward to the end of the
  backward (FSDP2 does not reshard the root after forward) and accumulates unsharded bf16 gradients; of
  the other units (the model's ``unit_types``: its Transformer and CNN blocks) the running one and the
  prefetched next one are gathered, and in the backward one unit's unsharded gradient exists in bf16 and in
  fp32 for the reduce-scatter. With ``parallel.reshard_after_forward = false`` every unit stays gathered;
- activations: the bytes of every tensor autograd saves for the backward, counted by running the forward
  and the losses on the meta device under ``saved_tensors_hooks`` (parameters excluded: FSDP frees and
  re-gathers those), at micro-batch 1 and 2, so that activations = fixed + per_image * micro_batch.
  With full activation checkpointing only the inputs of each unit and what is saved outside units are
  kept, plus one unit's recomputation in the backward. Both add a backward working set of twice the
  largest saved tensor (an op's output gradient and input gradient alive together);
- the frozen loss networks (LPIPS VGG16, the semantic teacher) in fp32, replicated; the discriminator
  (trained, data-parallel) with its fp32 weights, gradients and AdamW state, replicated;
- a fixed allowance, ``OVERHEAD_GIB``, for what ``torch.cuda.max_memory_allocated`` does not see.

Not modelled: torch.compile (fuses elementwise ops and saves less: the plan is then an upper bound),
selective checkpointing (between none and full), the tokenizer's data batch in pinned host memory.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from scaling.core.config import Config
from scaling.parallel.parallelize import units
from scaling.core.errors import UserError
from scaling.models.factory import COMPONENTS

GIB = 2**30
# CUDA context and kernels (~0.5 GiB on an H100), cuBLAS/cuDNN/NCCL workspaces (~0.5 GiB) and the caching
# allocator's fragmentation (reserved minus allocated, typically 1-2 GiB at these sizes): a fixed 3 GiB.
OVERHEAD_GIB = 3.0
STATE_BYTES = {"params": 4, "grads": 4, "optimizer": 8}  # fp32 master, fp32 grad, AdamW's two fp32 moments
GATHER_BYTES = 2  # bf16 parameters for compute (MixedPrecisionPolicy param_dtype)
AC_PLANNED = ("none", "full")

# The dtype rule on meta, where torch.autocast does not apply: CUDA autocast's op lists (the ops these
# models call). Matmuls, convolutions and attention compute in bf16; norms, softmax, reductions and losses
# in fp32; every other op keeps its inputs' promoted dtype. Parameters are bf16 (FSDP param_dtype), so
# e.g. a bf16 residual stream stays bf16 while a GroupNorm's output is fp32.
_BF16_OPS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "matmul", "__matmul__", "mm",
                       "bmm", "addmm", "baddbmm", "scaled_dot_product_attention"})
_FP32_OPS = frozenset({"layer_norm", "group_norm", "softmax", "log_softmax", "mse_loss", "l1_loss", "normalize",
                       "cosine_similarity", "pow", "__pow__", "exp", "log", "sum", "norm", "rsqrt", "reciprocal",
                       "cumsum", "prod", "softplus", "cross_entropy", "nll_loss", "cdist"})


class MetaAutocast(TorchFunctionMode):
    """bf16 autocast emulated at the torch-function level (above autograd, like the real one), so the
    tensors autograd saves have the dtype they would have on a GPU under ``torch.autocast("cuda")``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        dtype = torch.bfloat16 if name in _BF16_OPS else torch.float32 if name in _FP32_OPS else None
        if dtype is not None:
            args = tuple(_cast(a, dtype) for a in args)
            kwargs = {k: _cast(v, dtype) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def _cast(value: object, dtype: torch.dtype) -> object:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    return value


@dataclass
class Activations:
    """Bytes of saved activations per GPU: ``fixed + per_image * micro_batch``."""

    fixed: int
    per_image: int

    def at(self, micro_batch: int) -> int:
        return self.fixed + self.per_image * micro_batch


@dataclass
class MemoryPlan:
    gpus: int
    gpu_mem_gib: float
    micro_batch: int
    state: dict[str, dict[str, int]]  # component -> params/grads/optimizer bytes per GPU (sharded)
    extras: dict[str, int]  # lpips / teacher / discriminator bytes per GPU (replicated)
    gathered: int  # transient unsharded bf16 parameters and gradients
    largest_unit: int  # parameters of the largest FSDP unit besides the root
    root_unit: int  # parameters the root unit holds
    activations: dict[str, Activations]  # "none" / "full" activation checkpointing
    overhead: int = int(OVERHEAD_GIB * GIB)
    notes: list[str] = field(default_factory=list)

    def state_total(self) -> int:
        return sum(sum(parts.values()) for parts in self.state.values())

    def static(self) -> int:
        """Everything but the activations."""
        return self.state_total() + sum(self.extras.values()) + self.gathered + self.overhead

    def total(self, ac: str, micro_batch: int) -> int:
        return self.static() + self.activations[ac].at(micro_batch)

    def allocated(self, ac: str, micro_batch: int) -> int:
        """What ``torch.cuda.max_memory_allocated`` should read: the total without the fixed allowance."""
        return self.total(ac, micro_batch) - self.overhead

    def suggest(self, ac: str) -> int:
        """The largest micro-batch whose total fits in ``gpu_mem_gib``; 0 when not even one image fits."""
        act = self.activations[ac]
        room = self.gpu_mem_gib * GIB - self.static() - act.fixed
        return max(0, math.floor(room / act.per_image))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["activations"] = {ac: {"fixed": a.fixed, "per_image": a.per_image, "at_micro_batch": a.at(self.micro_batch)}
                              for ac, a in self.activations.items()}
        out |= {"state_total": self.state_total(), "static": self.static(),
                "total": {ac: self.total(ac, self.micro_batch) for ac in self.activations},
                "suggested_micro_batch": {ac: self.suggest(ac) for ac in self.activations}}
        return out


def plan_memory(cfg: Config, model: nn.Module, gpus: int, gpu_mem_gib: float, micro_batch: int) -> MemoryPlan:
    """The memory plan of training ``cfg``'s tokenizer (``model``, built on meta) on ``gpus`` GPUs."""
    if gpus < 1:
        raise UserError(f"--gpus: must be at least 1, got {gpus}")
    if micro_batch < 1:
        raise UserError(f"--micro-batch: must be at least 1, got {micro_batch}")
    extras = loss_networks(cfg)
    unit_sizes = [_numel(u) for u in units(model)]
    largest, root = max(unit_sizes, default=0), _numel(model) - sum(unit_sizes)
    return MemoryPlan(
        gpus=gpus, gpu_mem_gib=gpu_mem_gib, micro_batch=micro_batch, state=sharded_state(model, gpus),
        extras={name: _extra_bytes(name, m) for name, m in extras.items()},
        gathered=gathered_bytes(_numel(model), root, largest, cfg.parallel.reshard_after_forward),
        largest_unit=largest, root_unit=root, activations=activations(cfg, model, extras))


def check_fits(plan: MemoryPlan) -> None:
    """A one-line UserError when not even one image per GPU fits, with checkpointing."""
    if plan.suggest("full") >= 1:
        return
    need = plan.total("full", 1) / GIB
    raise UserError(f"--gpu-mem: {plan.gpu_mem_gib:g} GiB per GPU is too small: training needs {need:.1f} GiB at "
                    f"micro-batch 1 with full activation checkpointing on {plan.gpus} GPU(s) "
                    f"({plan.static() / GIB:.1f} GiB before activations); use more --gpus")


def sharded_state(model: nn.Module, gpus: int) -> dict[str, dict[str, int]]:
    groups = model.components()
    counts = {name: sum(p.numel() for m in groups.get(name, []) for p in m.parameters()) for name in COMPONENTS}
    return {name: {kind: math.ceil(n / gpus) * size for kind, size in STATE_BYTES.items()}
            for name, n in counts.items() if n}


def gathered_bytes(total: int, root: int, largest: int, reshard_after_forward: bool) -> int:
    """Unsharded bf16 parameters and gradients alive at the peak (see the module docstring)."""
    unit_grads = (GATHER_BYTES + STATE_BYTES["grads"]) * largest  # bf16 gradient, then its fp32 reduce-scatter input
    root_grads = GATHER_BYTES * root  # accumulate over the whole backward
    params = GATHER_BYTES * (total if not reshard_after_forward else root + 2 * largest)
    return params + unit_grads + root_grads


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _extra_bytes(name: str, module: nn.Module) -> int:
    per_param = sum(STATE_BYTES.values()) if name == "discriminator" else STATE_BYTES["params"]
    return _numel(module) * per_param


def loss_networks(cfg: Config) -> dict[str, nn.Module]:
    """The networks training holds besides the tokenizer, built on meta (architectures only, no files)."""
    lc, nets = cfg.loss, {}
    with torch.device("meta"):
        if lc.perceptual_weight > 0:
            nets["lpips"] = _lpips_network()
        if lc.semantic_weight > 0:
            import timm

            nets["teacher"] = timm.create_model(lc.semantic_teacher, pretrained=False, num_classes=0,
                                                img_size=lc.semantic_teacher_size)
        if lc.gan_weight > 0:
            from scaling.losses.gan import PatchDiscriminator

            nets["discriminator"] = PatchDiscriminator(lc.disc_layers, lc.disc_channels)
    for name, net in nets.items():
        net.to("meta").requires_grad_(name == "discriminator")
    return nets


def _lpips_network() -> nn.Module:
    from scaling.losses.perceptual import lpips_network

    try:
        return lpips_network()
    except ImportError:
        raise UserError("loss.perceptual_weight: planning LPIPS needs the lpips package (or set it to 0)") from None


def activations(cfg: Config, model: nn.Module, extras: dict[str, nn.Module]) -> dict[str, Activations]:
    """Saved-activation bytes without and with full checkpointing, fitted as fixed + per_image * b. The
    tokenizer computes with bf16 parameters, as FSDP's MixedPrecisionPolicy gives it."""
    model = copy.deepcopy(model).to(torch.bfloat16)
    one, two = (count_saved(cfg, model, extras, b) for b in (1, 2))
    return {ac: Activations(fixed=2 * one[ac] - two[ac], per_image=two[ac] - one[ac]) for ac in AC_PLANNED}


def count_saved(cfg: Config, model: nn.Module, extras: dict[str, nn.Module], batch: int,
                autocast: bool = True) -> dict[str, int]:
    """Saved bytes of one micro-batch, {"none": ..., "full": ...}, on the device ``model`` is on (meta for a
    plan; a real one to check the plan). ``autocast``: the bf16 dtype rule of ``MetaAutocast``."""
    nets = [model, *extras.values()]
    exclude = {t.untyped_storage()._cdata for net in nets for t in (*net.parameters(), *net.buffers())}
    tracker = _Tracker(model, exclude)
    try:
        with torch.autograd.graph.saved_tensors_hooks(tracker.pack, lambda t: t), \
                MetaAutocast() if autocast else contextlib.nullcontext():
            training_loss(cfg, model, extras, batch)
    finally:
        tracker.close()
    return tracker.totals()


class _Tracker:
    """Storages autograd saves, each attributed to the FSDP unit running when it was first saved (None:
    outside units), and the storages each unit receives as inputs (what full checkpointing keeps)."""

    def __init__(self, model: nn.Module, exclude: set[int]):
        self.exclude = exclude  # parameter and buffer storages: FSDP gathers those, they are not activations
        self.saved: dict[int, tuple[int, int | None]] = {}  # storage -> (bytes, unit)
        self.inputs: dict[int, int] = {}  # storage -> bytes, inputs of units
        self.alive: list[torch.Tensor] = []  # holds what is recorded, so no storage address is reused
        self.unit: int | None = None
        self.handles = []
        for i, unit in enumerate(units(model)):
            self.handles += [unit.register_forward_pre_hook(self._enter(i), with_kwargs=True),
                             unit.register_forward_hook(self._leave)]

    def _enter(self, i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.unit = i
            for t in (*args, *kwargs.values()):
                if isinstance(t, torch.Tensor):
                    self.inputs[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
                    self.alive.append(t)
        return hook

    def _leave(self, module: nn.Module, args: tuple, output: object) -> None:
        self.unit = None

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in self.exclude and storage._cdata not in self.saved:
            self.saved[storage._cdata] = (storage.nbytes(), self.unit)
            self.alive.append(t)
        return t

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def totals(self) -> dict[str, int]:
        workspace = 2 * max((n for n, _ in self.saved.values()), default=0)
        none = sum(n for n, _ in self.saved.values())
        kept = {k: n for k, (n, unit) in self.saved.items() if unit is None} | self.inputs
        per_unit: dict[int, int] = {}
        for key, (n, unit) in self.saved.items():
            if unit is not None and key not in kept:
                per_unit[unit] = per_unit.get(unit, 0) + n
        full = sum(kept.values()) + max(per_unit.values(), default=0)
        return {"none": none + workspace, "full": full + workspace}


def training_loss(cfg: Config, model: nn.Module, extras: dict[str, nn.Module], batch: int) -> torch.Tensor:
    """The generator's forward and losses for a random batch on ``model``'s device, meta included (the
    trainer's objective, loss weights aside: they change neither what is saved nor the FLOPs)."""
    lc = cfg.loss
    device = next(model.parameters()).device
    x = torch.rand(batch, 3, cfg.data.image_size, cfg.data.image_size, device=device) * 2 - 1
    temperature = lc.entropy_temperature if lc.entropy_weight else None
    recon, q, *student = model(x, temperature, semantic=True) if "teacher" in extras else model(x, temperature)
    recon_loss = F.l1_loss if lc.recon == "l1" else F.mse_loss
    loss = recon_loss(recon.float(), x) + q.codebook_loss + q.commit_loss + q.entropy_loss + q.kl_loss
    if "lpips" in extras:
        loss = loss + extras["lpips"](recon.float(), x).mean()
    if "discriminator" in extras:
        loss = loss - extras["discriminator"](recon).mean()
    if "teacher" in extras:
        loss = loss + _semantic_loss(cfg, extras["teacher"], student[0])
    return loss


def _semantic_loss(cfg: Config, teacher: nn.Module, student: torch.Tensor) -> torch.Tensor:
    """The cosine loss against teacher features; the teacher itself runs without grad and saves nothing."""
    from scaling.models.backbones import resample_tokens

    grid = cfg.loss.semantic_teacher_size // teacher.patch_embed.patch_size[0]
    target = torch.randn(len(student), grid * grid, teacher.num_features, device=student.device)
    return -F.cosine_similarity(resample_tokens(student, grid).float(), target.float(), dim=-1).mean()
