"""A procedural, class-labelled image dataset: shapes, textures and colours, deterministic by seed.

Each class fixes a shape, a texture and a palette; each sample varies position, size, rotation, phase,
lighting and noise. The classes are separable by content (not by a single pixel statistic), so
semantic features and AR probes have something real to learn.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "star", "bars")
TEXTURES = ("flat", "stripes", "checker", "dots", "waves")


@dataclass(frozen=True)
class ClassStyle:
    shape: str
    texture: str
    hue: float  # foreground hue in [0, 1)
    bg_hue: float


def class_styles(num_classes: int, seed: int = 0) -> list[ClassStyle]:
    """A distinct (shape, texture, palette) for each class, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    combos = [(s, t) for t in TEXTURES for s in SHAPES]
    order = rng.permutation(len(combos))
    styles = []
    for c in range(num_classes):
        shape, texture = combos[order[c % len(combos)]]
        hue = (c * 0.61803398875 + rng.uniform(0, 0.05)) % 1.0  # golden-ratio spacing of hues
        styles.append(ClassStyle(shape, texture, hue, (hue + 0.5 + rng.uniform(-0.1, 0.1)) % 1.0))
    return styles


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Soft mask of a unit-size shape in rotated, centred coordinates (u, v)."""
    r = np.hypot(u, v)
    if shape == "disc":
        d = r - 1.0
    elif shape == "square":
        d = np.maximum(abs(u), abs(v)) - 0.85
    elif shape == "triangle":
        d = np.maximum(v * 0.5 - u * 0.866, np.maximum(v * 0.5 + u * 0.866, -v)) - 0.5
    elif shape == "ring":
        d = abs(r - 0.75) - 0.25
    elif shape == "cross":
        d = np.minimum(np.maximum(abs(u) - 0.3, abs(v) - 1.0), np.maximum(abs(u) - 1.0, abs(v) - 0.3))
    elif shape == "diamond":
        d = abs(u) + abs(v) - 1.0
    elif shape == "star":
        theta = np.arctan2(v, u)
        d = r - (0.65 + 0.35 * np.cos(5 * theta))
    elif shape == "bars":
        d = np.maximum(abs(np.sin(u * 4.0)) - 0.5, np.maximum(abs(u), abs(v)) - 1.0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(0.5 - d * 8.0, 0.0, 1.0)


def _texture(texture: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    if texture == "flat":
        return np.ones_like(u)
    if texture == "stripes":
        return 0.6 + 0.4 * np.sign(np.sin(u * 9.0 + phase))
    if texture == "checker":
        return 0.6 + 0.4 * np.sign(np.sin(u * 7.0 + phase) * np.sin(v * 7.0))
    if texture == "dots":
        return 0.55 + 0.45 * (np.sin(u * 10.0 + phase) * np.sin(v * 10.0) > 0.4)
    if texture == "waves":
        return 0.6 + 0.4 * np.sin(u * 6.0 + 3.0 * np.sin(v * 4.0) + phase)
    raise ValueError(f"unknown texture {texture!r}")


def _rgb(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val), dtype=np.float32)


def render(style: ClassStyle, size: int, rng: np.random.Generator) -> np.ndarray:
    """One HxWx3 uint8 image of ``style``, its variation drawn from ``rng``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size * 2.0 - 1.0
    # Background: a gradient in the class's background hue plus a little low-frequency texture.
    bg_a = _rgb(style.bg_hue, rng.uniform(0.2, 0.5), rng.uniform(0.25, 0.6))
    bg_b = _rgb(style.bg_hue + rng.uniform(-0.08, 0.08), rng.uniform(0.2, 0.5), rng.uniform(0.4, 0.8))
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y + 1.0) / 2.0
    img = bg_a * (1 - t[..., None]) + bg_b * t[..., None]
    # Foreground object: one or two instances of the class's shape with its texture.
    for _ in range(rng.integers(1, 3)):
        scale = rng.uniform(0.3, 0.6)
        cx, cy = rng.uniform(-0.45, 0.45, size=2)
        rot = rng.uniform(0, 2 * np.pi)
        du, dv = (x - cx) / scale, (y - cy) / scale
        u = np.cos(rot) * du + np.sin(rot) * dv
        v = -np.sin(rot) * du + np.cos(rot) * dv
        mask = _shape_mask(style.shape, u, v)[..., None]
        shade = _texture(style.texture, u, v, rng.uniform(0, 2 * np.pi))[..., None]
        fg = _rgb(style.hue + rng.uniform(-0.04, 0.04), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
        img = img * (1 - mask) + fg * shade * mask
    img = img + rng.normal(0, 0.02, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def sample(index: int, split_seed: int, styles: list[ClassStyle], size: int) -> tuple[np.ndarray, int]:
    """Sample ``index`` of a split: its own RNG stream, so any subset renders identically in any order."""
    rng = np.random.default_rng([split_seed, index])
    label = int(rng.integers(len(styles)))
    return render(styles[label], size, rng), label
