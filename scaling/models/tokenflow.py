"""TokenFlow-style dual-codebook tokenizer (Qu et al. 2024), single scale.

A shared CNN encoder (the LlamaGen layout) feeds two branches: a semantic one (ViT blocks on the grid, then
a projection to ``quantizer.semantic_code_dim``) and a pixel one (a projection to ``quantizer.code_dim``).
``DualCodebookVQ`` picks one index per token by argmin d_sem + w * d_pix and looks both codes up with it.
The pixel decoder (the LlamaGen CNN) reconstructs the image from both codes, concatenated as in TokenFlow;
the semantic decoder (ViT blocks) maps the semantic codes to the teacher's feature width, and the trainer's
semantic loss aligns it with the frozen teacher (minus cosine: TokenFlow's 1 - cos up to a constant).
``model.semantic_encoder = "teacher"`` gives TokenFlow's own semantic encoder instead of the shared-CNN branch:
a timm ViT of the teacher's architecture on the image, initialised from the teacher's local weights and trained,
its patch tokens resampled to the CNN grid and projected to the semantic code width.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

from scaling.core.config import Config, LossConfig, ModelConfig, QuantizerConfig
from scaling.models.family import Family, always, encoder_decoder_summary, transformer_summary
from scaling.models.gigatok import TRANSFORMER_SIZES, TokenTransformer
from scaling.models.quantizers import DualCodebookVQ, QuantOut, build_quantizer
from scaling.models.transformer import TransformerBlock, init_linear
from scaling.models.vqgan import Decoder, Encoder, ResBlock


class TeacherInitViT(nn.Module):
    """TokenFlow's semantic encoder: a trainable timm ViT (the teacher's architecture and, at ``init_weights``,
    its local weights) on the resized image; (B, grid*grid, out_dim) tokens on the CNN grid."""

    def __init__(self, loss: LossConfig, grid: int, out_dim: int):
        super().__init__()
        import timm

        self.name, self.weights, self.size, self.grid = (loss.semantic_teacher, loss.semantic_teacher_weights,
                                                         loss.semantic_teacher_size, grid)
        self.vit = timm.create_model(self.name, pretrained=False, img_size=self.size, num_classes=0)
        self.proj = nn.Linear(self.vit.num_features, out_dim)
        # Persistent: an exported tokenizer rebuilt on meta gets them back from its file.
        self.register_buffer("mean", torch.empty(1, 3, 1, 1))
        self.register_buffer("std", torch.empty(1, 3, 1, 1))

    def init_weights(self) -> None:
        """The teacher's weights from its local file (a missing one is a one-line error naming the key)."""
        from scaling.models.backbones import load_timm

        init_linear(self.proj)
        pretrained = self.vit.pretrained_cfg
        self.mean.copy_(torch.tensor(pretrained["mean"]).view(1, 3, 1, 1))
        self.std.copy_(torch.tensor(pretrained["std"]).view(1, 3, 1, 1))
        if not self.proj.weight.is_meta:  # a meta build (planning, counting) has nothing to load into
            teacher = load_timm(self.name, self.weights, self.size, "loss.semantic_teacher_weights")
            self.vit.load_state_dict(teacher.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from scaling.models.backbones import resample_tokens, timm_input

        tokens = self.vit.forward_features(timm_input(x, self.size, self.mean, self.std))
        return self.proj(resample_tokens(tokens[:, self.vit.num_prefix_tokens:], self.grid))


class TokenFlow(nn.Module):
    """Image -> (B, g, g) ids into both codebooks -> image. ``semantic_dim > 0`` (the teacher's width) adds
    the semantic decoder; ``forward(..., semantic=True)`` then also returns its (B, g*g, semantic_dim) output."""

    # FSDP units; the teacher-initialised ViT's timm blocks are not among them (they stay in the root unit).
    unit_types: ClassVar[tuple[type[nn.Module], ...]] = (TransformerBlock, ResBlock)

    def __init__(self, model: ModelConfig, quantizer: QuantizerConfig, image_size: int, semantic_dim: int = 0,
                 loss: LossConfig | None = None):
        super().__init__()
        self.grid = grid = image_size // model.downsample
        z, sem, pix = model.z_channels, quantizer.semantic_code_dim, quantizer.code_dim
        self.encoder = Encoder(model)
        self.own_semantic_encoder = model.semantic_encoder == "teacher"
        self.semantic_encoder = TeacherInitViT(loss or LossConfig(), grid, sem) if self.own_semantic_encoder \
            else TokenTransformer(model.encoder_size, z, grid * grid, out_dim=sem)
        self.pixel_proj = nn.Conv2d(z, pix, 1)
        self.quantizer = build_quantizer(quantizer, single=DualCodebookVQ)  # multi-scale composes it
        self.post_quant_conv = nn.Conv2d(sem + pix, z, 1)
        self.decoder = Decoder(model)
        self.semantic_decoder = (TokenTransformer(model.decoder_size, sem, grid * grid, out_dim=semantic_dim)
                                 if semantic_dim else None)
        self.init_weights()

    def init_weights(self) -> None:
        for m in (self.encoder, self.decoder, self.pixel_proj, self.post_quant_conv):
            for sub in m.modules():
                if isinstance(sub, (nn.Conv2d, nn.GroupNorm)):
                    sub.reset_parameters()  # PyTorch defaults, as the vqgan CNN
        for m in (self.semantic_encoder, self.semantic_decoder):
            if m is not None:
                m.init_weights()
        self.quantizer.reset_parameters()

    def components(self) -> dict[str, list[nn.Module]]:
        """Parameter groups for counting: the semantic branch is the encoder Transformer, the semantic decoder
        (trained against the teacher, not needed to reconstruct) the semantic MLP."""
        return {"encoder_cnn": [self.encoder], "encoder_transformer": [self.semantic_encoder],
                "quantizer": [self.pixel_proj, self.quantizer, self.post_quant_conv], "decoder_cnn": [self.decoder],
                "semantic_mlp": [self.semantic_decoder] if self.semantic_decoder is not None else []}

    def encode(self, x: torch.Tensor, entropy_temperature: float | None = None) -> QuantOut:
        h = self.encoder(x)  # (B, z, g, g)
        sem = self.semantic_encoder(x) if self.own_semantic_encoder \
            else self.semantic_encoder(h.flatten(2).transpose(1, 2))[0]
        sem = sem.transpose(1, 2).unflatten(2, (self.grid, self.grid))
        return self.quantizer(torch.cat([sem, self.pixel_proj(h)], dim=1), entropy_temperature)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Image from (B, semantic_code_dim + code_dim, g, g) codes: both codebooks' entries, concatenated."""
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantizer.lookup(indices))

    def forward(self, x: torch.Tensor, entropy_temperature: float | None = None,
                semantic: bool = False) -> tuple[torch.Tensor, ...]:
        """(recon, QuantOut); with ``semantic``, also the semantic decoder's per-token teacher-space features."""
        q = self.encode(x, entropy_temperature)
        if not semantic:
            return self.decode(q.z_q), q
        if self.semantic_decoder is None:
            raise ValueError("semantic=True needs a model built with semantic_dim > 0")
        sem_codes = q.z_q[:, :self.quantizer.cfg.semantic_code_dim].flatten(2).transpose(1, 2)
        return self.decode(q.z_q), q, self.semantic_decoder(sem_codes)[0]


def build(cfg: Config) -> TokenFlow:
    from scaling.models.backbones import teacher_width

    semantic_dim = teacher_width(cfg.loss.semantic_teacher) if cfg.loss.semantic_weight else 0
    return TokenFlow(cfg.model, cfg.quantizer, cfg.data.image_size, semantic_dim, cfg.loss)


def check(cfg: Config) -> list[str]:
    if cfg.quantizer.kind != "vq":
        return [f"quantizer.kind: model.family 'tokenflow' needs 'vq' (two codebooks), got {cfg.quantizer.kind!r}"]
    if cfg.model.semantic_encoder == "teacher" and not cfg.loss.semantic_teacher_weights:
        return ["loss.semantic_teacher_weights: required when model.semantic_encoder is 'teacher' (the semantic "
                "encoder starts from the teacher's local weights)"]
    return []


def describe(cfg: Config) -> str:
    m, q = cfg.model, cfg.quantizer
    vits = encoder_decoder_summary(TRANSFORMER_SIZES, cfg)
    if m.semantic_encoder == "teacher":
        vits = (f"encoder {cfg.loss.semantic_teacher} (from the teacher's weights), decoder "
                f"{transformer_summary(TRANSFORMER_SIZES, m.decoder_size)} (width x layers)")
    return (f"tokenflow, {m.downsample}x CNN, semantic {vits}, VQ {q.codebook_size} x ({q.semantic_code_dim} "
            f"semantic + {q.code_dim} pixel) with one index (w = {q.pixel_distance_weight})"
            + (f", at scales {'/'.join(map(str, q.scales))}" if q.scales else ""))


FAMILY = Family(name="tokenflow", build=build, describe=describe, sizes=TRANSFORMER_SIZES, check=check,
                options={"loss.semantic_weight": always, "model.semantic_encoder": always,
                         "quantizer.scales": always})
