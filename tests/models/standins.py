"""Stand-ins of the model-zoo tests: a random-initialised timm ViT saved to a local file, in place of the
pretrained teachers and discriminator backbones (it proves mechanisms, not that pretrained features help).

Import the fixture into a test module to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def history(mlflow_uri: str, key: str) -> tuple[Any, dict[int, float]]:
    """The one MLflow run in the store, and metric ``key`` by step."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id])
    return run, {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-fidelity's Inception-v3 with random weights, saved as the local file ``eval.inception_weights`` names.

    Its constructor always loads a state dict (downloading one when given no path), so the instance is built with
    loading stubbed out. Convolutions get He initialisation: with PyTorch's default the activations shrink through
    ~50 layers and the 2048 pool features would be nearly constant, which would make every FID ~0."""
    from unittest import mock

    import torch.nn as nn
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    torch.manual_seed(0)
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("weights") / "inception_random.pth"
    torch.save(model.state_dict(), path)
    return path
