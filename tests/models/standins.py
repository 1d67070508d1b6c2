"""Stand-ins of the model-zoo tests: a random-initialised timm ViT saved to a local file, in place of the
pretrained teachers and discriminator backbones (it proves mechanisms, not that pretrained features help).

Import the fixture into a test module to use it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_VIT = "vit_tiny_patch16_224"


@pytest.fixture(scope="session")
def random_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vit_tiny_random.safetensors"
    save_file(timm.create_model(TINY_VIT, pretrained=False).state_dict(), str(path))
    return path
