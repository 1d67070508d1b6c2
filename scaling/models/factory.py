"""The registry of tokenizer families: one constructor, the configs' family checks, parameter counts by component.

Every family has ``forward(x, entropy_temperature=None) -> (recon, QuantOut)`` and ``components()``;
families that support semantic regularisation also take ``semantic=True`` and then return a third item.
A family is its module's ``FAMILY`` (``scaling.models.family``) listed in ``FAMILIES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import math

import torch.nn as nn

from scaling.core.config import Config
from scaling.core.config.schema import DISCRETE_KINDS
from scaling.core.config.loader import raise_problems, read_config
from scaling.models import gigatok, titok, tokenflow, vqgan
from scaling.models.family import Family, Sizes, no_problems

FAMILIES: dict[str, Family] = {f.name: f for f in (vqgan.FAMILY, gigatok.FAMILY, titok.FAMILY, tokenflow.FAMILY)}

COMPONENTS = ("encoder_cnn", "encoder_transformer", "quantizer", "decoder_transformer", "decoder_cnn",
              "semantic_mlp")

# Keys only some families honour (``Family.options``): whether a config sets one, and the problem when its
# family does not. Switches of the model alone are reported with the model's problems; those that pair the
# model with the teacher after core's problems (the order these one-line errors have always come in).
Options = dict[str, tuple[Callable[[Config], bool], str]]
MODEL_OPTIONS: Options = {
    "model.causal": (lambda cfg: cfg.model.causal,
                     "model.causal: applies to model.family 'gigatok' with model.layout '1d' only"),
    "model.nested_dropout": (lambda cfg: cfg.model.nested_dropout,
                             "model.nested_dropout: applies to 1D tokens only (model.family 'titok', or 'gigatok' "
                             "with model.layout '1d')"),
    "model.flow_decoder": (lambda cfg: cfg.model.flow_decoder,
                           "model.flow_decoder: applies to model.family 'titok' only"),
    "quantizer.scales": (lambda cfg: bool(cfg.quantizer.scales),
                         "quantizer.scales: multi-scale quantisation applies to 2D tokens only (model.family 'vqgan', "
                         "'tokenflow', or 'gigatok' with model.layout '2d')"),
    "quantizer.parts": (lambda cfg: cfg.quantizer.parts > 1,
                        "quantizer.parts: product quantisation does not apply to model.family 'tokenflow' (its dual "
                        "codebook splits a token already)"),
}
TEACHER_OPTIONS: Options = {
    "loss.semantic_weight": (lambda cfg: bool(cfg.loss.semantic_weight),
                             "loss.semantic_weight: semantic regularisation needs model.family 'gigatok' or "
                             "'tokenflow'"),
    "quantizer.semantic_part": (lambda cfg: cfg.quantizer.semantic_part >= 0,
                                "quantizer.semantic_part: applies to model.family 'gigatok' only"),
    "model.semantic_encoder": (lambda cfg: cfg.model.semantic_encoder == "teacher",
                               "model.semantic_encoder: 'teacher' applies to model.family 'tokenflow' only"),
}


def load_config(name_or_path: str | None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """A run's config for a file (or shipped name) and overrides, checked by core and by its family: what
    every command loads. Raises ConfigError, one line."""
    return check_config(read_config(name_or_path, overrides))


def check_config(cfg: Config) -> Config:
    """``cfg`` when neither core nor its family finds a problem; else one ConfigError line (the first problem,
    and how many more)."""
    family = FAMILIES.get(cfg.model.family)
    unknown = [] if family else [f"model.family: unknown family {cfg.model.family!r} (known: {', '.join(FAMILIES)})"]
    sizes, options, check = (family.sizes, family.options, family.check) if family else ({}, {}, no_problems)
    model = unknown + _size_errors(cfg, sizes) + _option_errors(cfg, options, MODEL_OPTIONS)
    raise_problems(model + cfg.validate() + check(cfg) + _option_errors(cfg, options, TEACHER_OPTIONS))
    return cfg


def _size_errors(cfg: Config, sizes: Sizes) -> list[str]:
    # A family without Transformers (vqgan) ignores the sizes, but a name no family knows is still reported.
    known = sizes or {name: None for f in FAMILIES.values() for name in f.sizes}
    return [f"model.{key}: unknown size {getattr(cfg.model, key)!r} (known: {', '.join(known)})"
            for key in ("encoder_size", "decoder_size") if getattr(cfg.model, key) not in known]


def _option_errors(cfg: Config, honoured: Mapping[str, Callable[[Config], bool]], options: Options) -> list[str]:
    return [problem for key, (is_set, problem) in options.items()
            if is_set(cfg) and not (key in honoured and honoured[key](cfg))]


def build_tokenizer(cfg: Config) -> nn.Module:
    """The tokenizer for ``cfg.model.family`` on the current default device (``torch.device("meta")`` works)."""
    family = FAMILIES.get(cfg.model.family)
    if family is None:
        raise ValueError(f"model.family {cfg.model.family!r}")  # check_config rejects it before this
    return family.build(cfg)


def bottleneck(cfg: Config, model: nn.Module) -> dict[str, int]:
    """What an image becomes between encoder and decoder (ViTok's bottleneck axis): ``bottleneck_tokens``,
    ``bottleneck_channels`` (a token's decoder input), ``bottleneck_floats`` (their product) and, for code ids,
    ``bottleneck_bits`` (tokens x parts x log2 codebook size). Models of 1D tokens say how many (``num_tokens``);
    multi-scale quantisation has every scale's grid; the others one token per cell of their downsampled grid."""
    grid, q = cfg.data.image_size // cfg.model.downsample, cfg.quantizer
    tokens = sum(s * s for s in q.scales) if q.scales else int(getattr(model, "num_tokens", grid * grid))
    channels = q.code_dim + (q.semantic_code_dim if cfg.model.family == "tokenflow" else 0)
    out = {"bottleneck_tokens": tokens, "bottleneck_channels": channels, "bottleneck_floats": tokens * channels}
    if q.kind in DISCRETE_KINDS:
        out["bottleneck_bits"] = round(tokens * q.parts * math.log2(q.codebook_size))
    return out


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``params_total``, ``params_encoder`` (CNN + Transformer), ``params_decoder`` and ``params_<component>``."""
    groups = model.components()
    count = {name: sum(p.numel() for m in groups.get(name, []) for p in m.parameters()) for name in COMPONENTS}
    out = {"params_total": sum(p.numel() for p in model.parameters()),
           "params_encoder": count["encoder_cnn"] + count["encoder_transformer"],
           "params_decoder": count["decoder_transformer"] + count["decoder_cnn"]}
    return out | {f"params_{name}": n for name, n in count.items()}
