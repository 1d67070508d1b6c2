"""What the rest of the package knows of a tokenizer family, declared once in the family's own module.

A family module (``vqgan``, ``gigatok``, ``titok``, ``tokenflow``) builds its model, owns its Transformer size
table and its config checks, and says how ``scaling plan`` summarises it; ``scaling.models.factory`` registers
it. Its model class declares its FSDP units (``unit_types``), which ``scaling.parallel`` and ``scaling.plan``
read from the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch.nn as nn

from scaling.core.config import Config, ModelConfig, QuantizerConfig

# name -> (width, layers, heads)
Sizes = Mapping[str, tuple[int, int, int]]


def no_problems(cfg: Config) -> list[str]:
    return []


@dataclass(frozen=True)
class Family:
    """A tokenizer family as the registry (``scaling.models.factory.FAMILIES``) knows it."""

    name: str  # model.family
    build: Callable[[Config], nn.Module]  # the tokenizer, on the current default device (meta works)
    describe: Callable[[Config], str]  # the one-line summary ``scaling plan`` prints
    sizes: Sizes = field(default_factory=dict)  # model.encoder_size / decoder_size names; {}: no Transformer
    # Problems of a config of this family, one line each naming its dotted key (core checks the rest).
    check: Callable[[Config], list[str]] = no_problems
    # Keys only some families honour (``factory.MODEL_OPTIONS``, ``TEACHER_OPTIONS``): when this one does.
    options: Mapping[str, Callable[[Config], bool]] = field(default_factory=dict)


def always(cfg: Config) -> bool:
    return True


def quantizer_summary(q: QuantizerConfig) -> str:
    """The bottleneck in a few words: ``VQ 512 x 8``, ``FSQ 8x5x5 (200 codes)``, ``KL 8 channels (weight 1e-06)``,
    ``VQ 2 parts of 512 x 4``, ``VQ 512 x 8 at scales 1/2/4 (shared codebook)``."""
    if q.scales:
        shared = "shared codebook" if q.shared_codebook else "a codebook per scale"
        return f"{quantizer_summary(replace(q, scales=()))} at scales {'/'.join(map(str, q.scales))} ({shared})"
    if q.parts > 1:
        return f"VQ {q.parts} parts of {q.codebook_size} x {q.code_dim // q.parts}"
    if q.kind == "fsq":
        return f"FSQ {'x'.join(map(str, q.levels))} ({q.codebook_size} codes)"
    if q.kind == "lfq":
        return f"LFQ {q.code_dim} bits"
    if q.kind == "kl":
        return f"KL {q.code_dim} channels (weight {q.kl_weight:g})"
    if q.kind == "continuous":
        return f"continuous {q.code_dim} channels (normalised)"
    return f"VQ {q.codebook_size} x {q.code_dim}"


def nested_summary(m: ModelConfig) -> str:
    """``, nested dropout`` (and ``, coarse to fine``) for a 1D family's summary; empty without."""
    if not m.nested_dropout:
        return ""
    return ", nested dropout" + (", coarse to fine" if m.coarse_to_fine else "")


def transformer_summary(sizes: Sizes, size: str) -> str:
    """``S 512x6``: a size's name, width and layers."""
    width, layers, _ = sizes[size]
    return f"{size} {width}x{layers}"


def encoder_decoder_summary(sizes: Sizes, cfg: Config) -> str:
    encoder, decoder = (transformer_summary(sizes, s) for s in (cfg.model.encoder_size, cfg.model.decoder_size))
    return f"encoder {encoder}, decoder {decoder} (width x layers)"
