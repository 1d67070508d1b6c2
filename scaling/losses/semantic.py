"""GigaTok semantic regularisation: decoder features, through an MLP, against a frozen ViT teacher.

The teacher (a timm ViT, DINOv2-B/14 with registers by default) sees the input image resized to
``loss.semantic_teacher_size``; its patch tokens (class and register tokens dropped) are the targets. The
student is the tokenizer's semantic MLP output on decoder block ``loss.semantic_layer``, resampled to the
teacher's patch grid when the grids differ (TokenFlow: its semantic decoder's output). Loss: minus the mean
per-token cosine similarity. The teacher is a ``models.backbones.FrozenTimm``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling.core.config import LossConfig
from scaling.models.backbones import FrozenTimm, resample_tokens


class SemanticLoss(nn.Module):
    """Frozen teacher; ``forward(student, x)`` -> (loss, mean cosine similarity). ``x`` in [-1, 1]."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.teacher = FrozenTimm(cfg.semantic_teacher, cfg.semantic_teacher_weights, cfg.semantic_teacher_size,
                                  "loss.semantic_teacher_weights")
        self.grid = cfg.semantic_teacher_size // self.teacher.model.patch_embed.patch_size[0]
        self._features = self.teacher.model.forward_features
        self.eval()

    def compile_forward(self) -> None:
        """torch.compile the teacher's feature pass (frozen, fixed shapes: one graph)."""
        self._features = torch.compile(self.teacher.model.forward_features, fullgraph=True)

    def train(self, mode: bool = True) -> SemanticLoss:
        return super().train(False)  # nothing here trains

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, grid*grid, D) teacher patch features of images in [-1, 1]."""
        tokens = self._features(self.teacher.prepare(x))
        return tokens[:, self.teacher.model.num_prefix_tokens:]

    def forward(self, student: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.targets(x)
        cos = F.cosine_similarity(resample_tokens(student, self.grid).float(), target.float(), dim=-1).mean()
        return -cos, cos.detach()
