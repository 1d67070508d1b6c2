"""The runs table: one row per training run from MLflow (an experiment, or a sweep's child runs).

Columns: ``run_id``, ``run_name``, ``status``, ``sweep``, ``parent_run_id``; every logged param under
its dotted config key (numbers parsed); how evaluation and probe metrics were measured (``provenance/...``
tags); every metric's final value (at its last step) under its own
name and, for val/, eval/ and probe/ metrics logged at several steps, the best value under
``<name>@best``; plus the metrics the analysis expects (``KNOWN_METRICS``), as NaN where a run did
not log them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.core.errors import UserError

SIZE_PARAMS = ("params_total", "params_encoder", "params_decoder")
KNOWN_METRICS = (
    "train/loss", "train/recon", "train/images_seen", "train/flops",
    "val/psnr", "val/recon_loss", "val/codebook_usage", "val/perplexity",
    "eval/rfid", "eval/lpips", "eval/psnr", "eval/ssim",
    "probe/ar_val_loss", "probe/gfid", "probe/linear_acc", "flow/val_loss", "flow/gfid", "flow/linear_acc",
)
# Metrics where larger is better; every other metric is best at its minimum.
HIGHER_IS_BETTER = frozenset(
    {"val/psnr", "val/codebook_usage", "val/perplexity", "eval/psnr", "eval/ssim", "probe/linear_acc",
     "flow/linear_acc"}
)
BEST_SUFFIX = "@best"
# How evaluation and probe metrics were measured: the tags they write (tracking.mlflow_tracker.PROVENANCE),
# columns provenance/eval/KEY and provenance/probe/KEY (``tables.provenance``).
PROVENANCE_PREFIX = "provenance/"
# Metrics whose best value over steps is worth a column (not training curves or counters).
BEST_PREFIXES = ("val/", "eval/", "probe/")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_PAGE = 1000


def higher_is_better(metric: str) -> bool:
    return metric.removesuffix(BEST_SUFFIX) in HIGHER_IS_BETTER


def _number(text: str) -> object:
    """A param string as int or float when it is one, else the string (MLflow stores strings)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def _metric_columns(client: object, run: object) -> dict[str, float]:
    """Final values of every metric of ``run`` (MLflow's latest: largest step, then newest) and
    best values of the evaluation metrics (their histories are short; training curves are not)."""
    out: dict[str, float] = dict(run.data.metrics)  # type: ignore[attr-defined]
    for key in list(out):
        if not key.startswith(BEST_PREFIXES):
            continue
        history = client.get_metric_history(run.info.run_id, key)  # type: ignore[attr-defined]
        values = [m.value for m in history if not math.isnan(m.value)]
        if len(values) > 1:
            out[key + BEST_SUFFIX] = max(values) if higher_is_better(key) else min(values)
    return out


def _row(client: object, run: object) -> dict[str, object]:
    info, data = run.info, run.data  # type: ignore[attr-defined]
    row: dict[str, object] = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "status": info.status,
        "sweep": data.tags.get("sweep"),
        "parent_run_id": data.tags.get("mlflow.parentRunId"),
    }
    row |= {key: _number(value) for key, value in data.params.items()}
    row |= {key: value for key, value in data.tags.items() if key.startswith(PROVENANCE_PREFIX)}
    return row | _metric_columns(client, run)


def _search(client: object, experiment_ids: list[str], filter_string: str = "") -> list[object]:
    runs, token = [], None
    while True:
        page = client.search_runs(  # type: ignore[attr-defined]
            experiment_ids, filter_string=filter_string, max_results=_PAGE, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _without_sweep_parents(runs: list[object]) -> list[object]:
    """``runs`` minus the parents of others (a sweep's parent run holds no results of its own), but for trunks:
    their children are cooldown branches (``train.branch_from`` set), and they are runs like any other."""
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs  # type: ignore[attr-defined]
               if not r.data.params.get("train.branch_from")}  # type: ignore[attr-defined]
    return [r for r in runs if r.info.run_id not in parents]  # type: ignore[attr-defined]


def _descendants(client: object, experiment_ids: list[str], parent: str) -> list[object]:
    """The runs under ``parent``: its children (a sweep's trials) and theirs (a trunk's cooldown branches)."""
    children = _search(client, experiment_ids, f"tags.`mlflow.parentRunId` = '{parent}'")
    if not children:
        return []
    by_parent: dict[str, list[object]] = {}
    for r in _search(client, sorted({c.info.experiment_id for c in children})):  # type: ignore[attr-defined]
        by_parent.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r)  # type: ignore[attr-defined]
    found, level = [], [parent]
    while level:
        below = [r for p in level for r in by_parent.get(p, [])]
        found += below
        level = [r.info.run_id for r in below]  # type: ignore[attr-defined]
    return found


def _find_runs(client: object, source: str) -> list[object]:
    """Runs named by ``source``: an experiment name, a parent run id, or a ``sweep`` tag value."""
    exp = client.get_experiment_by_name(source)  # type: ignore[attr-defined]
    if exp is not None:
        return _without_sweep_parents(_search(client, [exp.experiment_id]))
    all_ids = [e.experiment_id for e in client.search_experiments()]  # type: ignore[attr-defined]
    if _RUN_ID.match(source) and all_ids:
        below = _descendants(client, all_ids, source)
        if below:
            return below
    if all_ids and "'" not in source:
        tagged = _without_sweep_parents(_search(client, all_ids, f"tags.sweep = '{source}'"))
        if tagged:
            return tagged
    return []


def runs_table(source: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The runs table of an MLflow experiment name, sweep parent run id or sweep tag."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = _find_runs(client, source)
    if not runs:
        where = tracking_uri or "the default MLflow store"
        raise UserError(
            f"no experiment, sweep parent run or sweep tag {source!r} with runs in {where} "
            "(pass a CSV path, or --tracking-uri)"
        )
    return complete(pd.DataFrame([_row(client, r) for r in runs]))


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every expected size and metric column present (NaN where absent), numbers parsed."""
    df = df.copy()
    for col in SIZE_PARAMS + KNOWN_METRICS:
        if col not in df.columns:
            df[col] = np.nan
    for col in SIZE_PARAMS + KNOWN_METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def load_runs(source: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """A runs CSV (a path ending in .csv) or the MLflow runs named by ``source``."""
    if source.endswith(".csv") or Path(source).is_file():
        from scaling.analysis.tables.read import read_csv

        return complete(read_csv(source))
    return runs_table(source, tracking_uri)
