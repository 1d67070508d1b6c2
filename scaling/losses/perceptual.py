"""LPIPS-VGG perceptual loss (the ``lpips`` package) with every weight read from a local file."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from scaling.core.errors import UserError, require_file

# torchvision's vgg16().features indices -> the lpips package's five slices.
_SLICE_STARTS = (0, 4, 9, 16, 23, 30)


def _load_state(path: Path, key: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling/zip failure means an unusable file
        raise UserError(f"{key}: weight file {path} cannot be read ({type(e).__name__})") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def vgg_to_lpips_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision VGG16 ``features.<i>.*`` keys -> lpips ``slice<k>.<i>.*`` keys (classifier dropped)."""
    out = {}
    for key, value in state.items():
        if not key.startswith("features."):
            continue
        _, idx, param = key.split(".")
        k = next(s for s in range(5) if _SLICE_STARTS[s] <= int(idx) < _SLICE_STARTS[s + 1])
        out[f"slice{k + 1}.{idx}.{param}"] = value
    return out


def lpips_network() -> nn.Module:
    """LPIPS-VGG's architecture, random: pnet_rand builds VGG without torchvision's download, pretrained=False
    loads no heads implicitly. lpips passes torchvision the deprecated ``pretrained`` argument: its warning is
    silenced here."""
    import lpips

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        return lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)


class PerceptualLoss(nn.Module):
    """Frozen LPIPS-VGG; ``forward(x, y)`` -> mean distance. Inputs in [-1, 1]."""

    def __init__(self, vgg_weights: str, lpips_weights: str = ""):
        super().__init__()
        import lpips

        vgg_path = require_file(vgg_weights, "loss.vgg_weights")
        lin_path = require_file(lpips_weights, "loss.lpips_weights") if lpips_weights else Path(
            os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")
        lin_state = _load_state(lin_path, "loss.lpips_weights")
        self.lpips = lpips_network()
        self.lpips.load_state_dict(lin_state, strict=False)
        # lin0..lin4 hold the heads (``lins.N`` are aliases of the same modules)
        missing = [k for k in self.lpips.state_dict() if re.match(r"lin\d\.", k) and k not in lin_state]
        if missing:
            raise UserError(f"loss.lpips_weights: {lin_path} lacks {missing[0]} (not an LPIPS-VGG weight file)")
        vgg_state = vgg_to_lpips_keys(_load_state(vgg_path, "loss.vgg_weights"))
        try:
            self.lpips.net.load_state_dict(vgg_state, strict=True)
        except RuntimeError:
            raise UserError(f"loss.vgg_weights: {vgg_path} is not a torchvision VGG16 state dict") from None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # always frozen, always eval

    def compile_forward(self) -> None:
        """torch.compile the network (frozen, fixed shapes: one graph per input layout)."""
        self.lpips.compile(fullgraph=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y).mean()
