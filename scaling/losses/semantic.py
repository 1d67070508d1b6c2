"""GigaTok semantic regularisation: decoder features, through an MLP, against a frozen ViT teacher.

The teacher (a timm ViT, DINOv2-B/14 with registers by default) sees the input image resized to
``loss.semantic_teacher_size``; its patch tokens (class and register tokens dropped) are the targets. The
student is the tokenizer's semantic MLP output on decoder block ``loss.semantic_layer``, resampled to the
teacher's patch grid when the grids differ. Loss: minus the mean per-token cosine similarity.
"""

from __future__ import annotations

import difflib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.config import LossConfig
from scaling.errors import UserError, require_file


def _check_teacher_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        hint = difflib.get_close_matches(name, timm.list_models("vit_*"), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(f"loss.semantic_teacher: {name!r} is not a timm model{extra}")


def teacher_width(name: str) -> int:
    """Feature width of timm model ``name``, from a meta-device build: nothing allocated or downloaded."""
    import timm

    _check_teacher_name(name)
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False).num_features


def _load_teacher(cfg: LossConfig) -> nn.Module:
    import timm

    _check_teacher_name(cfg.semantic_teacher)
    path = require_file(cfg.semantic_teacher_weights, "loss.semantic_teacher_weights")
    try:  # timm's own loader: converts original DINOv2 checkpoints, resamples position embeddings
        return timm.create_model(cfg.semantic_teacher, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                 img_size=cfg.semantic_teacher_size, num_classes=0)
    except Exception as e:  # an unreadable file or another architecture's weights
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        mismatch = "loading state_dict" in str(e) and len(lines) > 1
        reason = lines[1][:120] if mismatch else f"not a readable weight file: {type(e).__name__}"
        raise UserError(f"loss.semantic_teacher_weights: {path} does not load into {cfg.semantic_teacher} "
                        f"({reason})") from None


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
        self.teacher = _load_teacher(cfg)
        self.size = cfg.semantic_teacher_size
        self.grid = self.size // self.teacher.patch_embed.patch_size[0]
        pcfg = self.teacher.pretrained_cfg
        self.register_buffer("mean", torch.tensor(pcfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pcfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> SemanticLoss:
        return super().train(False)  # always frozen, always eval

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, grid*grid, D) teacher patch features of images in [-1, 1]."""
        x = (x.float() + 1) / 2
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True)
        tokens = self.teacher.forward_features((x - self.mean) / self.std)
        return tokens[:, self.teacher.num_prefix_tokens:]

    def forward(self, student: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.targets(x)
        cos = F.cosine_similarity(resample_tokens(student, self.grid).float(), target.float(), dim=-1).mean()
        return -cos, cos.detach()
