"""Typed configuration: the single source of truth for a run.

Every field has a default so a TOML file only states what differs. ``validate`` methods return a list
of one-line problems, each naming its dotted key. What only a model family can judge (its name, its sizes,
the keys it honours) its family checks: ``scaling.models.factory.check_config`` runs both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field



@dataclass
class ModelConfig:
    family: str = "vqgan"  # vqgan: LlamaGen-style 2D CNN; gigatok: CNN + Transformer hybrid; titok: 1D ViT;
    # tokenflow: shared CNN, semantic + pixel codebooks with one index
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    norm_groups: int = 32
    dropout: float = 0.0
    # gigatok only: the CNN above, then Transformers between it and the quantiser
    layout: str = "1d"  # 1d: Q-Former over learnable queries; 2d: ViT blocks on the CNN grid
    encoder_size: str = "S"  # a name of the family's size table (tokenflow: the semantic encoder)
    decoder_size: str = "S"  # tokenflow: the semantic decoder
    num_tokens: int = 256  # 1D tokens per image (layout 1d, titok)
    causal: bool = False  # 1D queries attend only to earlier ones (SEED)
    nested_dropout: bool = False  # 1D tokens: train on random prefixes, the tail masked (FlexTok): any prefix decodes
    # titok: decode with a rectified-flow decoder conditioned on the tokens (FlexTok), from noise in this many
    # Euler steps; trained on its one-step estimate of the image
    flow_decoder: bool = False
    flow_decode_steps: int = 25
    # what the flow decoder's network predicts: "x" the clean image (prefix PSNR rises with the tokens kept at tiny
    # scale, samples smoother), "v" the velocity e - x (flat PSNR there, samples with the data's texture: lower rFID)
    flow_prediction: str = "x"
    # nested dropout, DetailFlow's coarse-to-fine tokens: a prefix of k of K tokens is trained against the image
    # degraded to side S - (S - 1) ((K - k) / (K - 1)) ** coarse_power, at least coarse_min_side
    # (``models.nested.target_side``; DetailFlow's power 1.5), not against the image itself
    coarse_to_fine: bool = False
    coarse_power: float = 1.5
    coarse_min_side: int = 1
    patch_size: int = 16  # titok: ViT patch side (no CNN)
    # tokenflow: cnn = ViT blocks on the shared CNN grid; teacher = TokenFlow's own semantic encoder, a timm ViT of
    # loss.semantic_teacher's architecture initialised from loss.semantic_teacher_weights, then trained
    semantic_encoder: str = "cnn"

    @property
    def downsample(self) -> int:
        return self.patch_size if self.family == "titok" else 2 ** (len(self.channel_mult) - 1)

    def validate(self) -> list[str]:
        errs = []
        if self.layout not in ("1d", "2d"):
            errs.append(f"model.layout: must be '1d' or '2d', got {self.layout!r}")
        if self.num_tokens <= 0:
            errs.append(f"model.num_tokens: must be positive, got {self.num_tokens}")
        if self.semantic_encoder not in ("cnn", "teacher"):
            errs.append(f"model.semantic_encoder: must be 'cnn' or 'teacher', got {self.semantic_encoder!r}")
        if self.patch_size <= 0:
            errs.append(f"model.patch_size: must be positive, got {self.patch_size}")
        if self.coarse_to_fine and not self.nested_dropout:
            errs.append("model.coarse_to_fine: needs model.nested_dropout (it sets the targets of the prefixes nested "
                        "dropout trains)")
        if self.coarse_to_fine and self.flow_decoder:
            errs.append("model.coarse_to_fine: not with model.flow_decoder (its decoder samples full images)")
        if self.coarse_power <= 0:
            errs.append(f"model.coarse_power: must be > 0, got {self.coarse_power}")
        if self.coarse_min_side <= 0:
            errs.append(f"model.coarse_min_side: must be positive, got {self.coarse_min_side}")
        if self.flow_prediction not in ("x", "v"):
            errs.append(f"model.flow_prediction: must be 'x' or 'v', got {self.flow_prediction!r}")
        if self.flow_decode_steps <= 0:
            errs.append(f"model.flow_decode_steps: must be positive, got {self.flow_decode_steps}")
        if not self.channel_mult:
            errs.append("model.channel_mult: must not be empty")
        if any(m <= 0 for m in self.channel_mult):
            errs.append("model.channel_mult: every multiplier must be positive")
        for key in ("base_channels", "num_res_blocks", "z_channels"):
            if getattr(self, key) <= 0:
                errs.append(f"model.{key}: must be positive, got {getattr(self, key)}")
        if self.norm_groups <= 0 or self.base_channels % self.norm_groups:
            errs.append(f"model.base_channels: {self.base_channels} is not a multiple of model.norm_groups "
                        f"{self.norm_groups} (GroupNorm)")
        if not 0.0 <= self.dropout < 1.0:
            errs.append(f"model.dropout: must be in [0, 1), got {self.dropout}")
        return errs


DISCRETE_KINDS = ("vq", "fsq", "lfq")  # quantizer.kind values that give code ids
CONTINUOUS_KINDS = ("kl", "continuous")  # ... and those whose tokens stay continuous


@dataclass
class QuantizerConfig:
    # vq | fsq (finite scalar) | lfq (lookup-free, binary) | kl (diagonal Gaussian, continuous) | continuous
    # (continuous tokens normalised per token)
    kind: str = "vq"
    codebook_size: int = 16384  # fsq: the product of levels; lfq: 2 ** code_dim; unused by continuous kinds
    code_dim: int = 8  # fsq: len(levels); continuous kinds: channels per token
    beta: float = 0.25  # commitment weight (vq, lfq)
    kl_weight: float = 1e-6  # kl: weight of the KL to N(0, I) (per token, summed over channels)
    l2_norm: bool = True  # vq
    rotation_trick: bool = False  # vq: gradients through a rotation to the code instead of straight through
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # fsq: values per dimension (FlexTok's 64000 codes)
    # tokenflow: a semantic codebook beside the code_dim one (pixel), one index: argmin d_sem + w * d_pix
    semantic_code_dim: int = 32
    pixel_distance_weight: float = 1.0  # w
    # vq, product quantisation (ImageFolder): each token's code_dim channels split into this many equal parts, each
    # quantised by its own codebook of codebook_size codes (and its own entropy loss); the token's id folds the
    # parts' ids into one number, part p's digit weighing codebook_size ** p
    parts: int = 1
    # gigatok with loss.semantic_weight > 0: the part whose quantised tokens are semantically regularised
    # (ImageFolder; 0 with one part: the whole token), instead of a decoder layer (GigaTok); -1: the decoder layer
    semantic_part: int = -1
    # vq on a 2D grid, multi-scale residual quantisation (VAR; TokenFlow's dual codebook as well): the side of each
    # scale's grid, coarse to fine, the last the latent grid's; each scale quantises what the coarser ones left
    # (area-downsampled), its codes upsampled bilinearly and summed. Ids: every scale's grid, coarse first. A side
    # may repeat (ImageFolder's 1, 1, 2, 3, 3, ...). (): one scale
    scales: tuple[int, ...] = ()
    shared_codebook: bool = True  # scales: one codebook for every scale (VAR), else one per scale

    def validate(self) -> list[str]:
        errs = []
        if self.kind not in DISCRETE_KINDS + CONTINUOUS_KINDS:
            errs.append(f"quantizer.kind: unknown quantizer {self.kind!r} (known: "
                        f"{', '.join(DISCRETE_KINDS + CONTINUOUS_KINDS)})")
        if self.kind == "fsq":
            errs += self._fsq_errors()
        if self.kind == "lfq" and not 1 <= self.code_dim <= 16:
            errs.append(f"quantizer.code_dim: lfq takes 1 to 16 bits, got {self.code_dim}")
        elif self.kind == "lfq" and self.codebook_size != 2 ** self.code_dim:
            errs.append(f"quantizer.codebook_size: lfq with quantizer.code_dim {self.code_dim} has "
                        f"{2 ** self.code_dim} codes, got {self.codebook_size}")
        if self.codebook_size < 2:
            errs.append(f"quantizer.codebook_size: must be at least 2, got {self.codebook_size}")
        if self.code_dim <= 0:
            errs.append(f"quantizer.code_dim: must be positive, got {self.code_dim}")
        if self.beta < 0:
            errs.append(f"quantizer.beta: must be >= 0, got {self.beta}")
        if self.kl_weight < 0:
            errs.append(f"quantizer.kl_weight: must be >= 0, got {self.kl_weight}")
        if self.semantic_code_dim <= 0:
            errs.append(f"quantizer.semantic_code_dim: must be positive, got {self.semantic_code_dim}")
        if self.pixel_distance_weight < 0:
            errs.append(f"quantizer.pixel_distance_weight: must be >= 0, got {self.pixel_distance_weight}")
        return errs + self._structure_errors()

    def _structure_errors(self) -> list[str]:
        """Product and multi-scale quantisation: the vq kind only, and sizes that fit."""
        errs = []
        if self.parts < 1:
            errs.append(f"quantizer.parts: must be >= 1, got {self.parts}")
        elif self.parts > 1 and self.kind != "vq":
            errs.append(f"quantizer.parts: product quantisation applies to quantizer.kind 'vq' only, got {self.kind!r}")
        elif self.code_dim % self.parts:
            errs.append(f"quantizer.parts: {self.parts} parts do not divide quantizer.code_dim {self.code_dim}")
        elif self.codebook_size ** self.parts > 2**31:
            errs.append(f"quantizer.parts: {self.parts} parts of {self.codebook_size} codes give more ids than int32 "
                        "holds (at most 2**31)")
        if not -1 <= self.semantic_part < self.parts:
            errs.append(f"quantizer.semantic_part: must be -1 (none) or a part below quantizer.parts {self.parts}, "
                        f"got {self.semantic_part}")
        if not self.scales:
            return errs
        if self.kind != "vq":
            errs.append(f"quantizer.scales: multi-scale quantisation applies to quantizer.kind 'vq' only, "
                        f"got {self.kind!r}")
        if any(s <= 0 for s in self.scales) or list(self.scales) != sorted(self.scales):
            errs.append(f"quantizer.scales: positive sides, coarse to fine (a side may repeat: its residual is "
                        f"quantised again, as ImageFolder's 1, 1, 2, 3, 3, ...), got {list(self.scales)}")
        if self.l2_norm:
            errs.append("quantizer.l2_norm: must be false with quantizer.scales (residuals shrink scale by scale; "
                        "unit-norm codes cannot follow them)")
        if self.rotation_trick:
            errs.append("quantizer.rotation_trick: not with quantizer.scales (their sum passes gradients straight "
                        "through)")
        return errs

    def _fsq_errors(self) -> list[str]:
        if not self.levels or any(n < 2 for n in self.levels):
            return [f"quantizer.levels: fsq needs levels of at least 2, got {list(self.levels)}"]
        errs, codes = [], math.prod(self.levels)
        if self.code_dim != len(self.levels):
            errs.append(f"quantizer.code_dim: fsq with {len(self.levels)} levels has code_dim {len(self.levels)}, "
                        f"got {self.code_dim}")
        if self.codebook_size != codes:
            errs.append(f"quantizer.codebook_size: fsq levels {list(self.levels)} give {codes} codes, "
                        f"got {self.codebook_size}")
        return errs


@dataclass
class LossConfig:
    recon: str = "l2"
    recon_weight: float = 1.0
    codebook_weight: float = 1.0
    entropy_weight: float = 0.0
    entropy_temperature: float = 0.01
    perceptual_weight: float = 1.0
    vgg_weights: str = ""  # local torchvision VGG16 state dict
    lpips_weights: str = ""  # LPIPS linear heads; empty: the vgg.pth the lpips package ships
    gan_weight: float = 0.5
    gan_start: int = 20000
    disc_kind: str = "patchgan"  # patchgan | dino: frozen timm ViT, trainable heads on 4 blocks, DiffAug
    disc_layers: int = 3  # patchgan
    disc_channels: int = 64  # patchgan
    disc_backbone: str = "vit_small_patch16_224.dino"  # dino: a timm model name
    disc_backbone_weights: str = ""  # dino: its weights, a local file
    disc_backbone_size: int = 224  # dino: input side the backbone sees
    # semantic regularisation (gigatok; tokenflow's semantic decoder): decoder layer semantic_layer, through an
    # MLP, against a frozen ViT
    semantic_weight: float = 0.0
    semantic_layer: int = 3  # 1-based decoder Transformer layer
    semantic_teacher: str = "vit_base_patch14_reg4_dinov2"  # a timm model name
    semantic_teacher_weights: str = ""  # its weights, a local file
    semantic_teacher_size: int = 224  # input side the teacher sees (224 / 14 = 16x16 patches)

    def validate(self) -> list[str]:
        errs = []
        if self.recon not in ("l1", "l2"):
            errs.append(f"loss.recon: must be 'l1' or 'l2', got {self.recon!r}")
        for key in ("recon_weight", "codebook_weight", "entropy_weight", "perceptual_weight", "gan_weight",
                    "semantic_weight"):
            if getattr(self, key) < 0:
                errs.append(f"loss.{key}: must be >= 0, got {getattr(self, key)}")
        if self.entropy_temperature <= 0:
            errs.append(f"loss.entropy_temperature: must be > 0, got {self.entropy_temperature}")
        if self.gan_start < 0:
            errs.append(f"loss.gan_start: must be >= 0, got {self.gan_start}")
        if self.disc_layers < 1 or self.disc_channels < 1:
            errs.append("loss.disc_layers/disc_channels: must be positive")
        if self.disc_kind not in ("patchgan", "dino"):
            errs.append(f"loss.disc_kind: must be 'patchgan' or 'dino', got {self.disc_kind!r}")
        if self.disc_kind == "dino" and self.gan_weight > 0 and not self.disc_backbone_weights:
            errs.append("loss.disc_backbone_weights: required when loss.disc_kind is 'dino' (a local weight file)")
        if self.disc_backbone_size <= 0:
            errs.append(f"loss.disc_backbone_size: must be positive, got {self.disc_backbone_size}")
        if self.perceptual_weight > 0 and not self.vgg_weights:
            errs.append("loss.vgg_weights: required when loss.perceptual_weight > 0 (a local VGG16 weight file)")
        if self.semantic_weight > 0 and not self.semantic_teacher_weights:
            errs.append("loss.semantic_teacher_weights: required when loss.semantic_weight > 0 (a local weight file)")
        if self.semantic_layer < 1:
            errs.append(f"loss.semantic_layer: must be >= 1, got {self.semantic_layer}")
        if self.semantic_teacher_size <= 0:
            errs.append(f"loss.semantic_teacher_size: must be positive, got {self.semantic_teacher_size}")
        return errs


@dataclass
class DataConfig:
    train: str = ""  # MDS split: local directory or remote URI
    val: str = ""
    image_size: int = 256
    crop_min: float = 0.8  # random crop of crop_min..1.0 of the side (GigaTok)
    hflip: bool = True
    num_workers: int = 0
    val_samples: int = 64
    cache_dir: str = ""  # local cache for remote splits; default: inside the run directory

    def validate(self) -> list[str]:
        errs = []
        if not self.train:
            errs.append("data.train: required (path or URI of the MDS training split)")
        if not self.val:
            errs.append("data.val: required (path or URI of the MDS validation split)")
        if self.image_size <= 0:
            errs.append(f"data.image_size: must be positive, got {self.image_size}")
        if not 0.0 < self.crop_min <= 1.0:
            errs.append(f"data.crop_min: must be in (0, 1], got {self.crop_min}")
        if self.num_workers < 0:
            errs.append(f"data.num_workers: must be >= 0, got {self.num_workers}")
        if self.val_samples <= 0:
            errs.append(f"data.val_samples: must be positive, got {self.val_samples}")
        return errs


@dataclass
class OptimConfig:
    lr: float = 1e-4
    min_lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    grad_clip: float = 10.0  # 0 disables clipping
    schedule: str = "cosine"  # cosine | constant | wsd
    warmup_steps: int = 0
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying at the end
    decay_steps: int = 0  # wsd: the decay's length in steps (a cooldown branch's); 0: decay_fraction of the steps
    disc_lr: float = 1e-4

    def validate(self) -> list[str]:
        errs = []
        if self.lr <= 0:
            errs.append(f"optim.lr: must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            errs.append(f"optim.min_lr: must be in [0, optim.lr], got {self.min_lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            errs.append(f"optim.betas: must be two numbers in [0, 1), got {list(self.betas)}")
        if self.weight_decay < 0:
            errs.append(f"optim.weight_decay: must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            errs.append(f"optim.grad_clip: must be >= 0, got {self.grad_clip}")
        if self.schedule not in ("cosine", "constant", "wsd"):
            errs.append(f"optim.schedule: must be cosine, constant or wsd, got {self.schedule!r}")
        if self.warmup_steps < 0:
            errs.append(f"optim.warmup_steps: must be >= 0, got {self.warmup_steps}")
        if not 0 < self.decay_fraction <= 1:
            errs.append(f"optim.decay_fraction: must be in (0, 1], got {self.decay_fraction}")
        if self.decay_steps < 0:
            errs.append(f"optim.decay_steps: must be >= 0, got {self.decay_steps}")
        if self.disc_lr <= 0:
            errs.append(f"optim.disc_lr: must be > 0, got {self.disc_lr}")
        return errs


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    steps: int = 1000
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    ema_decay: float = 0.0  # 0 disables the EMA copy
    log_every: int = 10
    val_every: int = 500
    ckpt_every: int = 500
    keep_last: int = 2  # newest checkpoints kept besides milestones
    milestone_every: int = 0  # 0: no milestones
    async_checkpoint: bool = False  # periodic checkpoints written in the background (DCP async_save) while training
    progress: bool = True
    # > 0: ``steps`` is derived so that the run spends this many training FLOPs (as it logs train/flops), within
    # half a step; the axis of an isoFLOP grid (``plan.cost.with_budget_steps``)
    flops_budget: float = 0.0
    # A cooldown branch: this run starts from the checkpoint at ``branch_step`` of the run in ``branch_from`` (its
    # trunk: weights, optimisers, data position) and trains on to ``steps`` (``train.branch.check_branch``)
    branch_from: str = ""
    branch_step: int = 0

    def validate(self) -> list[str]:
        errs = []
        if not self.run_dir:
            errs.append("train.run_dir: required")
        for key in ("steps", "batch_size", "log_every", "val_every", "ckpt_every", "keep_last"):
            if getattr(self, key) <= 0:
                errs.append(f"train.{key}: must be positive, got {getattr(self, key)}")
        if self.milestone_every < 0:
            errs.append(f"train.milestone_every: must be >= 0, got {self.milestone_every}")
        if self.flops_budget < 0:
            errs.append(f"train.flops_budget: must be >= 0, got {self.flops_budget:g}")
        if bool(self.branch_from) != (self.branch_step > 0):
            errs.append("train.branch_step: a branch needs both train.branch_from (the trunk's run directory) and "
                        f"train.branch_step > 0, got {self.branch_from!r} and {self.branch_step}")
        if self.device not in ("auto", "cpu", "cuda"):
            errs.append(f"train.device: must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            errs.append(f"train.precision: must be auto, fp32 or bf16, got {self.precision!r}")
        if not 0 <= self.ema_decay < 1:
            errs.append(f"train.ema_decay: must be in [0, 1), got {self.ema_decay}")
        return errs


AC_MODES = ("none", "full", "selective")
FLOAT8_RECIPES = ("tensorwise", "rowwise", "rowwise_with_gw_hp")


@dataclass
class ParallelConfig:
    """How a run is spread over ranks: FSDP2 everywhere (a world of one included), and what trades memory."""

    micro_batch_size: int = 0  # images per rank per forward; 0: train.batch_size / world (no accumulation)
    activation_checkpoint: str = "none"  # none | full (recompute every block) | selective (torchtitan op-level SAC)
    compile: bool = False  # torch.compile per Transformer block and per CNN block, and the loss networks whole
    channels_last: bool = False  # NHWC images, so convolutions run in cuDNN's fast layout on GPUs
    float8: bool = False  # torchao float8 training of the Transformer blocks' Linear layers (H100/H200)
    float8_recipe: str = "tensorwise"  # tensorwise | rowwise | rowwise_with_gw_hp (torchao's recipes)
    float8_emulate: bool = False  # the float8 casts emulated in high precision: CPU tests, no speed-up
    reshard_after_forward: bool = True  # FSDP: free gathered parameters after forward (ZeRO-3) or keep them (ZeRO-2)

    def validate(self) -> list[str]:
        errs = []
        if self.micro_batch_size < 0:
            errs.append(f"parallel.micro_batch_size: must be >= 0, got {self.micro_batch_size}")
        if self.activation_checkpoint not in AC_MODES:
            errs.append(f"parallel.activation_checkpoint: must be one of {', '.join(AC_MODES)}, "
                        f"got {self.activation_checkpoint!r}")
        if self.float8_recipe not in FLOAT8_RECIPES:
            errs.append(f"parallel.float8_recipe: must be one of {', '.join(FLOAT8_RECIPES)}, got {self.float8_recipe!r}")
        if self.float8 and self.float8_emulate and self.compile:
            errs.append("parallel.float8_emulate: torchao's emulated float8 runs eager only; set parallel.compile false")
        return errs


@dataclass
class TrackingConfig:
    uri: str = ""  # empty: MLFLOW_TRACKING_URI, else MLflow's default local store
    experiment: str = "scaling"
    run_name: str = ""  # empty: the run directory's name
    parent_run_id: str = ""  # a sweep's MLflow run: this run is created as its child (tag mlflow.parentRunId)

    def validate(self) -> list[str]:
        return [] if self.experiment else ["tracking.experiment: must not be empty"]


@dataclass
class EvalConfig:
    """``scaling eval`` and the probe's gFID: Inception features for FID come from a local file."""

    inception_weights: str = ""  # torch-fidelity's weights-inception-2015-12-05-6726825d.pth, a local file
    # the network FID is measured on: inception (FID proper) | teacher (loss.semantic_teacher's pooled features:
    # FD-DINOv2 with the default teacher; the tiny study's only choice, having no Inception weights)
    fid_features: str = "inception"
    num_images: int = 0  # validation images to reconstruct; 0: the whole split
    batch_size: int = 64
    stats_cache: str = ""  # reference FID statistics, computed once; empty: ~/.cache/scaling/fid
    device: str = "auto"  # auto | cpu | cuda: where evaluation runs (not necessarily where the run trained)

    def validate(self) -> list[str]:
        errs = []
        if self.num_images < 0:
            errs.append(f"eval.num_images: must be >= 0, got {self.num_images}")
        if self.batch_size <= 0:
            errs.append(f"eval.batch_size: must be positive, got {self.batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            errs.append(f"eval.device: must be auto, cpu or cuda, got {self.device!r}")
        if self.fid_features not in ("inception", "teacher"):
            errs.append(f"eval.fid_features: must be inception or teacher, got {self.fid_features!r}")
        return errs


# (width, layers, heads): LlamaGen's GPT-B and -L for the AR probe; SiT's S, B and L for the flow probe
PROBE_SIZES: dict[str, tuple[int, int, int]] = {"tiny": (64, 4, 4), "S": (384, 12, 6), "B": (768, 12, 12),
                                                "L": (1024, 24, 16)}
PROBE_KINDS = ("ar", "flow")
SAMPLERS = ("euler", "heun")
AR_ORDERS = ("token", "scale")


@dataclass
class ProbeConfig:
    """Generation probes of a trained tokenizer, each a class-conditional generator on its cached tokens: ``ar``
    (GigaTok's protocol: a GPT over code ids) and ``flow`` (SiT-style rectified flow over the continuous latents,
    or over the code vectors of a discrete tokenizer). They share these settings; each has its own directory,
    checkpoints and MLflow keys."""

    # which probes a probe job runs; empty: the tokenizer's own (ar for code ids, flow for continuous tokens)
    kinds: tuple[str, ...] = ()
    size: str = "B"  # a PROBE_SIZES name: LlamaGen GPT-B / SiT-B for studies, tiny for tests
    steps: int = 250000  # GigaTok: 50 ImageNet epochs at batch 256
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 0
    class_dropout: float = 0.1  # label dropout -> classifier-free guidance
    dropout: float = 0.0
    ckpt_every: int = 5000
    log_every: int = 100
    gfid_samples: int = 50000  # generated images for gFID (GigaTok: 50k)
    cfg_scales: tuple[float, ...] = (1.0, 1.5, 2.0)  # searched; 1.0 is no guidance
    temperature: float = 1.0  # ar
    top_k: int = 0  # ar; 0: sample from the whole codebook
    # ar: "token" predicts the next token (of a multi-scale tokenizer: over its scales' sequence, coarsest first);
    # "scale" predicts the next scale, every token of it at once, as VAR does (needs quantizer.scales)
    order: str = "token"
    sample_steps: int = 50  # flow: ODE steps from noise (t = 1) to data (t = 0)
    sampler: str = "euler"  # flow: euler | heun (second order, two model calls a step)
    linear_probe_epochs: int = 30
    linear_probe_images: int = 50000  # training images whose features train the linear head (0: all)
    cache_part_images: int = 1024  # token caching works (and resumes) in parts of this many images

    def validate(self) -> list[str]:
        errs = []
        unknown = [k for k in self.kinds if k not in PROBE_KINDS]
        if unknown or len(set(self.kinds)) != len(self.kinds):
            errs.append(f"probe.kinds: each of {', '.join(PROBE_KINDS)} at most once, got {list(self.kinds)}")
        if self.sampler not in SAMPLERS:
            errs.append(f"probe.sampler: must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.order not in AR_ORDERS:
            errs.append(f"probe.order: must be one of {', '.join(AR_ORDERS)}, got {self.order!r}")
        if self.size not in PROBE_SIZES:
            errs.append(f"probe.size: unknown size {self.size!r} (known: {', '.join(PROBE_SIZES)})")
        for key in ("steps", "batch_size", "ckpt_every", "log_every", "gfid_samples", "linear_probe_epochs",
                    "cache_part_images", "sample_steps"):
            if getattr(self, key) <= 0:
                errs.append(f"probe.{key}: must be positive, got {getattr(self, key)}")
        if self.lr <= 0:
            errs.append(f"probe.lr: must be > 0, got {self.lr}")
        if not 0 <= self.class_dropout < 1:
            errs.append(f"probe.class_dropout: must be in [0, 1), got {self.class_dropout}")
        if not self.cfg_scales or any(s < 1 for s in self.cfg_scales):
            errs.append(f"probe.cfg_scales: a non-empty list of scales >= 1, got {list(self.cfg_scales)}")
        if self.temperature <= 0:
            errs.append(f"probe.temperature: must be > 0, got {self.temperature}")
        for key in ("top_k", "warmup_steps", "linear_probe_images"):
            if getattr(self, key) < 0:
                errs.append(f"probe.{key}: must be >= 0, got {getattr(self, key)}")
        return errs


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def validate(self) -> list[str]:
        errs = []
        for section in (self.model, self.quantizer, self.loss, self.data, self.optim, self.train, self.parallel,
                        self.tracking, self.eval, self.probe):
            errs += section.validate()
        down = self.model.downsample
        if self.data.image_size % down:
            why = "model.patch_size" if self.model.family == "titok" else "2^(len(model.channel_mult)-1)"
            errs.append(
                f"data.image_size: {self.data.image_size} is not divisible by the model's downsampling "
                f"factor {down} ({why})"
            )
        if "ar" in self.probe.kinds and self.quantizer.kind in CONTINUOUS_KINDS:
            errs.append(f"probe.kinds: the ar probe needs code ids; quantizer.kind {self.quantizer.kind!r} gives "
                        "continuous tokens (probe them with 'flow')")
        if self.quantizer.kind in ("fsq",) + CONTINUOUS_KINDS and self.loss.entropy_weight:
            errs.append(f"loss.entropy_weight: must be 0 with quantizer.kind {self.quantizer.kind!r} (no codebook to "
                        "score codes against)")
        grid = self.data.image_size // down
        if self.quantizer.scales and self.quantizer.scales[-1] != grid:
            errs.append(f"quantizer.scales: the last scale must be the latent grid's side {grid} "
                        f"(data.image_size / {down}), got {self.quantizer.scales[-1]}")
        if self.probe.order == "scale" and not self.quantizer.scales:
            errs.append("probe.order: 'scale' (next-scale prediction) needs a multi-scale tokenizer "
                        "(quantizer.scales); this one has one token grid")
        if self.quantizer.semantic_part >= 0 and not self.loss.semantic_weight:
            errs.append("quantizer.semantic_part: needs loss.semantic_weight > 0 (it names the regularised part)")
        if self.optim.warmup_steps >= self.train.steps and self.optim.warmup_steps > 0:
            errs.append(f"optim.warmup_steps: {self.optim.warmup_steps} must be below train.steps {self.train.steps}")
        return errs


def probe_kinds(cfg: Config) -> tuple[str, ...]:
    """The probes a probe job of this run runs: ``probe.kinds``, or the tokenizer's own kind."""
    return cfg.probe.kinds or (("flow",) if cfg.quantizer.kind in CONTINUOUS_KINDS else ("ar",))
