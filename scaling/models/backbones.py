"""Pretrained timm backbones loaded from local files (never a hub): the semantic teacher, TokenFlow's semantic
encoder, the DINO discriminator and FID-on-teacher features all come through here. Errors are one line."""

from __future__ import annotations

import difflib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.core.errors import UserError, require_file


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
