"""Helpers shared by several test modules (plain functions and constants; the fixtures are in conftest.py)."""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from scaling.core.checkpoint import CheckpointStore, read_checkpoint
from scaling.core.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
TINY_VIT = "vit_tiny_patch16_224"  # the random stand-in for pretrained teachers and backbones (conftest.random_vit)


def imported_names(path: Path, module: str) -> list[tuple[str, int]]:
    """(dotted name, line) for every import in ``path`` (the module called ``module``), wherever the statement is:
    ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a.b`` (a module or a name in ``a``); relative imports
    are resolved against the module's package. The import-graph tests read packages off these names."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def tiny_args(data: Path, run_dir: Path, tracking_uri: str, **extra: object) -> list[str]:
    """Overrides pointing the shipped tiny config at test data, a run directory and an MLflow store."""
    args = {"data.train": str(data / "train"), "data.val": str(data / "val"), "train.run_dir": str(run_dir),
            "tracking.uri": tracking_uri, "train.progress": False, **extra}
    out: list[str] = []
    for key, value in args.items():
        out += [f"--{key}", literal(value)]
    return out


def literal(value: object) -> str:
    """``value`` as the TOML literal an override takes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 1500, ranks: int = 0) -> subprocess.CompletedProcess:
    """``python -m scaling ARGS`` in a fresh process, as a user would run it; under torchrun with ``ranks``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] \
        if ranks else [sys.executable]
    return subprocess.run([*launcher, "-m", "scaling", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def final_state(run_dir: Path, step: int) -> dict:
    """Checkpoint ``step`` of a run as one dict of full tensors, its pickled train state unpacked."""
    state = read_checkpoint(CheckpointStore(RunDir(run_dir).checkpoints).path(step))
    train = pickle.loads(state["train"])
    # The metric points not sent yet depend on when the tracker's sender thread last reached the store, not on the
    # training: not part of the state compared (that none is lost is the MLflow history's to show).
    train.pop("tracker_pending")
    return state | {"train": train}


def assert_bitwise_equal(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")


def teacher_features(vit: Path) -> dict[str, object]:
    """Overrides naming the random tiny ViT at ``vit`` as a run's semantic teacher (at 64x64), so that its FID can be
    measured on the teacher's features (``eval.fid_features = "teacher"``): on the CPU, a fraction of Inception's
    cost at 299x299. With ``loss.semantic_weight`` 0 the run does not train with it."""
    return {"loss.semantic_teacher": TINY_VIT, "loss.semantic_teacher_weights": str(vit),
            "loss.semantic_teacher_size": 64}


def train_tiny(data: Path, run_dir: Path, uri: str, **extra: object) -> Path:
    """A short tiny-config training run (150 steps, one checkpoint at the end)."""
    args = {"train.steps": 150, "train.ckpt_every": 150, "train.val_every": 150, "train.log_every": 50, **extra}
    proc = run_cli("train", "tiny", *tiny_args(data, run_dir, uri, **args))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def history(mlflow_uri: str, key: str) -> tuple[Any, dict[int, float]]:
    """The one MLflow run in the store, and metric ``key`` by step."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scaling").experiment_id])
    return run, {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


def run_main(capsys: Any, *args: str) -> subprocess.CompletedProcess:
    """``scaling ARGS`` in this process (``scaling.cli.main``, what ``python -m scaling`` exits with), its exit code
    and output as ``run_cli`` returns them: for commands that start no training, without a new interpreter."""
    from scaling.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["scaling", *args], code, out, err)


def write_sweep(tmp: Path, data: Path, body: str, profile: str = "local", steps: int = 30,
                max_concurrent: int = 2) -> Path:
    """A sweep of the tiny config on the test data (at half its batch: the sweep tests check orchestration, not
    learning), its root, study and MLflow store under ``tmp``."""
    path = tmp / "sweep.toml"
    path.write_text(f'''base = "tiny"
root = "{tmp / 'root'}"
profile = "{REPO / 'slurm' / f'{profile}.toml'}"
max_concurrent = {max_concurrent}

[overrides]
"train.steps" = {steps}
"train.batch_size" = 16
"train.val_every" = 10
"train.log_every" = 10
"data.train" = "{data / 'train'}"
"data.val" = "{data / 'val'}"

[tracking]
uri = "sqlite:///{tmp / 'mlflow.db'}"
experiment = "sweeps"
''' + body)
    return path


# A synthetic isoFLOP grid from Hoffmann et al.'s fitted law: under C = 6 N D its loss-optimal N grows as
# C^(beta / (alpha + beta)).
CHINCHILLA_LAW = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
ISOFLOP_EXPONENT = CHINCHILLA_LAW["beta"] / (CHINCHILLA_LAW["alpha"] + CHINCHILLA_LAW["beta"])
ISOFLOP_BUDGETS = [1e18, 1e19, 1e20, 1e21]


def isoflop_n_opt(c: float) -> float:
    law = CHINCHILLA_LAW
    g = (law["alpha"] * law["A"] / (law["beta"] * law["B"])) ** (1 / (law["alpha"] + law["beta"]))
    return g * (c / 6) ** ISOFLOP_EXPONENT


def isoflop_runs(one_sided: float | None = None) -> Any:
    """A runs table of ``ISOFLOP_BUDGETS`` x six sizes around each budget's optimum (``one_sided``: that budget
    only below it), 0.3% noise, with the columns a sweep's runs have."""
    import numpy as np
    import pandas as pd

    from scaling.analysis.laws.forms import CHINCHILLA

    rng = np.random.default_rng(0)
    rows = []
    for c in ISOFLOP_BUDGETS:
        span = (1 / 64, 1 / 2) if c == one_sided else (1 / 8, 8)
        for n in isoflop_n_opt(c) * np.geomspace(*span, 6):
            loss = CHINCHILLA.predict(CHINCHILLA_LAW, np.array([[n], [c / (6 * n)]]))[0] * np.exp(rng.normal(0, 0.003))
            rows.append({"run_name": f"C{c:.0e}-N{n:.3g}", "params_total": n, "train.flops_budget": c,
                         "train/flops": c, "val/recon_loss": loss, "loss.semantic_weight": 0.0})
    return pd.DataFrame(rows)


def cap_vectors(n: int, dim: int) -> torch.Tensor:
    """``n`` unit vectors on one side of the sphere (first coordinate negative): data no code starting in the
    opposite cap (``start_in_cap``) is near, so only the codes on the cap's rim are ever assigned."""
    data = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    data[:, 0] = -data[:, 0].abs()
    return data


@torch.no_grad()
def start_in_cap(vq: torch.nn.Module) -> None:
    """Every code of a VectorQuantizer in a narrow cap around the first axis."""
    size, dim = vq.codebook.weight.shape
    vq.codebook.weight.copy_(torch.eye(dim)[0] + 0.05 * torch.randn(size, dim))


def fit_codebooks(quantizer: torch.nn.Module, data: torch.Tensor, entropy_weight: float, steps: int = 200) -> None:
    """Fit a quantiser's codebooks to (N, C) rows by their codebook loss (plus the entropy loss at GigaTok's
    temperature 0.01, weighted): Adam, 1e-2, batches of 256."""
    opt = torch.optim.Adam(quantizer.parameters(), lr=1e-2)
    for _ in range(steps):
        q = quantizer(data[torch.randint(0, len(data), (256,))][:, :, None], 0.01 if entropy_weight else None)
        opt.zero_grad()
        (q.codebook_loss + entropy_weight * q.entropy_loss).backward()
        opt.step()
