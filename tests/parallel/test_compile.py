"""Every region ``parallel.compile`` compiles traces as one graph (``torch._dynamo.explain`` on the CPU): each
unit of each family, the frozen loss networks and the discriminator. A graph break would split a region into
pieces that run eagerly in between, and ``fullgraph=True`` would stop a GPU run at its first step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling.core.config import LossConfig
from scaling.losses.gan import PatchDiscriminator
from scaling.losses.perceptual import PerceptualLoss
from scaling.losses.semantic import SemanticLoss
from scaling.models.factory import build_tokenizer, load_config
from scaling.parallel.parallelize import units
from tests.helpers import TINY_VIT


def graph_breaks(fn, *args) -> list[str]:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    return [str(reason.reason).splitlines()[0] for reason in explanation.break_reasons]


def unit_inputs(model: torch.nn.Module, x: torch.Tensor, **kwargs) -> list[tuple[torch.nn.Module, tuple, dict]]:
    """One (unit, args, kwargs) per distinct unit class and input shape, captured from an eager forward."""
    seen, calls = set(), []

    def capture(unit, args, kw):
        key = (type(unit), tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
        if key not in seen:
            seen.add(key)
            calls.append((unit, args, kw))

    handles = [u.register_forward_pre_hook(capture, with_kwargs=True) for u in units(model)]
    with torch.no_grad():
        model(x, **kwargs)
    for h in handles:
        h.remove()
    return calls


@pytest.mark.parametrize("preset", ["gigatok-tiny", "titok-tiny", "tokenflow-tiny", "tiny"])
def test_every_unit_compiles_as_one_graph(preset: str) -> None:
    cfg = load_config(preset, [])
    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    if hasattr(model, "init_weights"):
        model.init_weights()
    x = torch.rand(2, 3, cfg.data.image_size, cfg.data.image_size) * 2 - 1
    calls = unit_inputs(model, x)
    assert calls, f"{preset}: no units"
    for unit, args, kwargs in calls:
        assert graph_breaks(lambda *a: unit(*a, **kwargs), *args) == [], type(unit).__name__


def test_loss_networks_and_discriminator_compile_as_one_graph(random_vgg: Path, random_vit: Path) -> None:
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    perceptual = PerceptualLoss(str(random_vgg))
    assert graph_breaks(perceptual.lpips, x, y) == []
    semantic = SemanticLoss(LossConfig(semantic_weight=1.0, semantic_teacher=TINY_VIT,
                                       semantic_teacher_weights=str(random_vit), semantic_teacher_size=64))
    assert graph_breaks(semantic.teacher.model.forward_features, semantic.teacher.prepare(x)) == []
    assert graph_breaks(PatchDiscriminator(), x) == []
