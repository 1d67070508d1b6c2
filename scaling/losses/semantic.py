"""GigaTok semantic regularisation: decoder features, through an MLP, against a frozen ViT teacher.

The teacher (a timm ViT, DINOv2-B/14 with registers by default) sees the input image resized to
``loss.semantic_teacher_size``; its patch tokens (class and register tokens dropped) are the targets. The
student is the tokenizer's semantic MLP output on decoder block ``loss.semantic_layer``, resampled to the
teacher's patch grid when the grids differ (TokenFlow: its semantic decoder's output). Loss: minus the mean
per-token cosine similarity. ``FrozenTimm`` also serves the DINO discriminator's backbone.
"""

from __future__ import annotations

import difflib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.config import LossConfig
from scaling.errors import UserError, require_file


def check_timm_name(name: str, key: str = "loss.semantic_teacher") -> None:
    import timm

    if not timm.is_model(name):
        hint = difflib.get_close_matches(name, timm.list_models("vit_*"), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(f"{key}: {name!r} is not a timm model{extra}")


def teacher_width(name: str) -> int:
    """Feature width of timm model ``name``, from a meta-device build: nothing allocated or downloaded."""
    import timm

    check_timm_name(name)
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False).num_features


def load_timm(name: str, weights: str, size: int, key: str) -> nn.Module:
    """timm model ``name`` at input side ``size``, weights from the local file ``weights`` (config key ``key``
    names it, ``key`` without ``_weights`` names the model), no classifier. Errors are one line."""
    import timm

    check_timm_name(name, key.removesuffix("_weights"))
    path = require_file(weights, key)
    try:  # timm's own loader: converts original DINOv2 checkpoints, resamples position embeddings
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                 img_size=size, num_classes=0)
    except Exception as e:  # an unreadable file or another architecture's weights
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        mismatch = "loading state_dict" in str(e) and len(lines) > 1
        reason = lines[1][:120] if mismatch else f"not a readable weight file: {type(e).__name__}"
        raise UserError(f"{key}: {path} does not load into {name} ({reason})") from None


class FrozenTimm(nn.Module):
    """A timm model from a local file (``load_timm``), frozen and always in eval mode. ``prepare`` turns
    images in [-1, 1] into its input: resized to its side, normalised with its pretrained mean and std."""

    def __init__(self, name: str, weights: str, size: int, key: str):
        super().__init__()
        self.model = load_timm(name, weights, size, key)
        self.size = size
        pcfg = self.model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(pcfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pcfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenTimm:
        return super().train(False)  # always frozen, always eval

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return timm_input(x, self.size, self.mean, self.std)


def timm_input(x: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as a pretrained timm model expects them: resized to ``size``, normalised."""
    x = (x.float() + 1) / 2
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return (x - mean) / std


def resample_tokens(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, g*g, C) tokens of a square grid -> (B, grid*grid, C), bilinear (antialiased when shrinking)."""
    g = math.isqrt(tokens.shape[1])
    if g == grid:
        return tokens
    img = tokens.transpose(1, 2).unflatten(2, (g, g))
    img = F.interpolate(img, size=(grid, grid), mode="bilinear", align_corners=False, antialias=grid < g)
    return img.flatten(2).transpose(1, 2)


class SemanticLoss(nn.Module):
    """Frozen teacher; ``forward(student, x)`` -> (loss, mean cosine similarity). ``x`` in [-1, 1]."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.teacher = FrozenTimm(cfg.semantic_teacher, cfg.semantic_teacher_weights, cfg.semantic_teacher_size,
                                  "loss.semantic_teacher_weights")
        self.grid = cfg.semantic_teacher_size // self.teacher.model.patch_embed.patch_size[0]
        self.eval()

    def train(self, mode: bool = True) -> SemanticLoss:
        return super().train(False)  # nothing here trains

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, grid*grid, D) teacher patch features of images in [-1, 1]."""
        tokens = self.teacher.model.forward_features(self.teacher.prepare(x))
        return tokens[:, self.teacher.model.num_prefix_tokens:]

    def forward(self, student: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.targets(x)
        cos = F.cosine_similarity(resample_tokens(student, self.grid).float(), target.float(), dim=-1).mean()
        return -cos, cos.detach()
