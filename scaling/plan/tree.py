"""A module tree that stays readable at billions of parameters: runs of alike blocks collapse to one line."""

from __future__ import annotations

import itertools

import torch.nn as nn


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'; with a unit, '1.23 MFLOP'."""
    for scale, suffix in ((1e12, "T"), (1e9, "G" if unit else "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{' ' if unit else ''}{suffix}{unit}"
    return f"{n:.0f}{' ' if unit else ''}{unit}"


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def module_tree(model: nn.Module, depth: int = 3) -> list[str]:
    """Lines ``name  Class  params``, ``depth`` levels deep; N alike blocks in a row are one line."""
    lines = [f"{type(model).__name__}  {human(_count(model))}"]
    _walk(model, 1, depth, lines)
    return lines


def _runs(module: nn.Module) -> list[list[tuple[str, nn.Module]]]:
    """Children with parameters, grouped into runs of the same class and size."""
    children = [(name, child) for name, child in module.named_children() if _count(child)]  # no activations
    return [list(run) for _, run in itertools.groupby(children, key=lambda c: (type(c[1]), _count(c[1])))]


def _walk(module: nn.Module, level: int, depth: int, lines: list[str]) -> None:
    pad = "  " * level
    if any(module.children()):  # own parameters of a composite, e.g. position embeddings and queries
        for name, param in module.named_parameters(recurse=False):
            lines.append(f"{pad}{name}  {tuple(param.shape)}  {human(param.numel())}")
    for run in _runs(module):
        name, child = run[0]
        inner = _runs(child) if isinstance(child, (nn.ModuleList, nn.Sequential)) else []
        if len(inner) == 1 and len(inner[0]) > 1:  # a stack of alike blocks: one line, then one block
            name, child, run = name, inner[0][0][1], inner[0]
            lines.append(f"{pad}{name}  {len(run)} x {type(child).__name__}  {human(_count(child))} each")
        elif len(run) > 1:
            lines.append(f"{pad}{name}-{run[-1][0]}  {len(run)} x {type(child).__name__}  "
                         f"{human(_count(child))} each")
        else:
            lines.append(f"{pad}{name}  {type(child).__name__}  {human(_count(child))}")
        if level < depth:
            _walk(child, level + 1, depth, lines)
