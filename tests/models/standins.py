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
