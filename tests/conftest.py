"""Shared fixtures: the synthetic dataset, an MLflow store, a trained tiny tokenizer, random-initialised
stand-ins for pretrained weights, and the Slurm dev cluster. Plain helpers are in ``tests/helpers.py``."""

from __future__ import annotations

import fcntl
import gc
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, run_cli, teacher_features, tiny_args

# Under pytest-xdist each worker's tests, and every process they start (trainings, Slurm jobs), use one thread:
# with OpenMP's default of one per core, two workers' trainings would oversubscribe the two cores, their
# threads spinning while they wait for each other.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The test modules have imported torch, mlflow, optuna and the rest: freeze their objects, as a job does
    (``scaling.core.startup``), so that the collector's full passes during the tests leave them alone."""
    gc.freeze()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which turns the group marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: the suite runs on two pytest-xdist workers, and a long test started last would leave one
    worker idle while it finishes (the order within each tier is kept). Every test that uses the dev Slurm
    cluster runs on one worker, one at a time: two tests' jobs on its one node would wait for each other's
    CPUs and run past their deadlines."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "dev_cluster" in item.fixturenames or (callspec is not None and callspec.params.get("profile") == "dev"):
            item.add_marker(pytest.mark.xdist_group("dev_cluster"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 training and 128 validation 32x32 images in 10 classes (what the tiny config expects)."""
    from scaling.data.build import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp("data") / "synth", num_classes=10, train=600, val=128,
                           size=32, seed=0, workers=1, progress=False)


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def tokenizer_run(synth_data: Path, random_vit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny tokenizer: the tiny config through the CLI for a third of its steps (200, validated at 0, 100
    and 200; its output beside the run, ``train.out``). The training test asserts what it learnt; the evaluation,
    probe and status tests read it. It names a semantic teacher it does not train with (``teacher_features``), so
    probes can measure FID on its features."""
    tmp = tmp_path_factory.mktemp("tokenizer")
    args = {"train.steps": 200, "train.ckpt_every": 200, "train.val_every": 100, "train.log_every": 50}
    proc = run_cli("train", "tiny", *tiny_args(synth_data, tmp / "run", f"sqlite:///{tmp / 'mlflow.db'}", **args,
                                                **teacher_features(random_vit)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (tmp / "train.out").write_text(proc.stdout)
    return tmp / "run"


@pytest.fixture(scope="session")
def ema_run(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny run of 20 steps with an EMA, checkpoints at 10 and 20, and its MLflow store; shared by the
    evaluation and export tests (which only read its checkpoints; eval adds its own eval/ records)."""
    root = tmp_path_factory.mktemp("emarun")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    overrides = {"train.steps": 20, "train.batch_size": 8, "optim.warmup_steps": 0, "train.ckpt_every": 10,
                 "train.val_every": 20, "train.ema_decay": 0.9, "data.val_samples": 8}
    result = run_cli("train", "tiny", *tiny_args(synth_data, root / "run", uri, **overrides))
    assert result.returncode == 0, result.stderr
    return root / "run", uri


# Stand-ins of the model zoo: random-initialised networks saved to local files, in place of the pretrained
# teachers, discriminator backbones, Inception and VGG (they prove mechanisms, not that pretrained features help).

@pytest.fixture(scope="session")
def random_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised timm ``vit_tiny_patch16_224`` (``tests.helpers.TINY_VIT``) as a safetensors file."""
    import timm
    from safetensors.torch import save_file

    from tests.helpers import TINY_VIT

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vit_tiny_random.safetensors"
    save_file(timm.create_model(TINY_VIT, pretrained=False).state_dict(), str(path))
    return path


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


@pytest.fixture(scope="session")
def random_vgg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised stand-in for torchvision's VGG16 weights (features only, as LPIPS uses)."""
    import torchvision

    torch.manual_seed(0)
    state = {k: v for k, v in torchvision.models.vgg16().state_dict().items() if k.startswith("features.")}
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def dev_cluster_up() -> None:
    """The single-node Slurm dev cluster (``slurm/devcluster.sh up``), started once per session; where it cannot
    start, the tests that need it are skipped with the script's reason."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm dev cluster needs root (apt and daemons)")
    with open("/tmp/scaling-devcluster.lock", "w") as lock:  # pytest-xdist workers: one installs, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(["bash", str(REPO / "slurm" / "devcluster.sh"), "up"], capture_output=True, text=True,
                              timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"Slurm dev cluster could not start: {proc.stderr.strip().splitlines()[-1:]}")


@pytest.fixture
def dev_cluster(dev_cluster_up: None) -> Iterator[None]:
    """The dev cluster, idle when the test starts and left idle (``slurm/devcluster.sh idle``): jobs one test
    leaves behind, or a node a stuck job drained, would keep the next test's jobs pending past its deadline."""
    _idle_dev_cluster()
    yield
    _idle_dev_cluster()


def _idle_dev_cluster() -> None:
    proc = subprocess.run(["bash", str(REPO / "slurm" / "devcluster.sh"), "idle"], capture_output=True, text=True,
                          timeout=300)
    print(proc.stderr, end="")  # a node it had to resume, shown with the test's output
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(params=["local", "dev"])
def profile(request: pytest.FixtureRequest) -> str:
    """A cluster profile of ``slurm/``: the local executor, and the dev Slurm cluster (started on first use)."""
    if request.param == "dev":
        request.getfixturevalue("dev_cluster")
    return request.param
