"""One constructor for every tokenizer family, and parameter counts by component.

Every family has ``forward(x, entropy_temperature=None) -> (recon, QuantOut)`` and ``components()``;
families that support semantic regularisation also take ``semantic=True`` and then return a third item.
"""

from __future__ import annotations

import torch.nn as nn

from scaling.core.config import Config

COMPONENTS = ("encoder_cnn", "encoder_transformer", "quantizer", "decoder_transformer", "decoder_cnn",
              "semantic_mlp")


def build_tokenizer(cfg: Config) -> nn.Module:
    """The tokenizer for ``cfg.model.family`` on the current default device (``torch.device("meta")`` works)."""
    if cfg.model.family == "vqgan":
        from scaling.models.vqgan import VQTokenizer

        return VQTokenizer(cfg.model, cfg.quantizer)
    if cfg.model.family == "titok":
        from scaling.models.titok import TiTok

        return TiTok(cfg.model, cfg.quantizer, cfg.data.image_size)
    from scaling.models.backbones import teacher_width

    semantic_dim = teacher_width(cfg.loss.semantic_teacher) if cfg.loss.semantic_weight else 0
    if cfg.model.family == "gigatok":
        from scaling.models.gigatok import GigaTok

        return GigaTok(cfg.model, cfg.quantizer, cfg.data.image_size, semantic_dim, cfg.loss.semantic_layer)
    if cfg.model.family == "tokenflow":
        from scaling.models.tokenflow import TokenFlow

        return TokenFlow(cfg.model, cfg.quantizer, cfg.data.image_size, semantic_dim, cfg.loss)
    raise ValueError(f"model.family {cfg.model.family!r}")  # validate() rejects it before this


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``params_total``, ``params_encoder`` (CNN + Transformer), ``params_decoder`` and ``params_<component>``."""
    groups = model.components()
    count = {name: sum(p.numel() for m in groups.get(name, []) for p in m.parameters()) for name in COMPONENTS}
    out = {"params_total": sum(p.numel() for p in model.parameters()),
           "params_encoder": count["encoder_cnn"] + count["encoder_transformer"],
           "params_decoder": count["decoder_transformer"] + count["decoder_cnn"]}
    return out | {f"params_{name}": n for name, n in count.items()}
