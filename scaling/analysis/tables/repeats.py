"""Runs that share a grid point, and runs of one size trained on different amounts of data.

A grid point run with several seeds is one measurement with its spread: ``repeats`` gives each point's mean and
its 95% Student-t interval (the mean's, from the runs' standard deviation), so the report shows a mean with an
interval where it would otherwise show a cloud of points. Runs are at one grid point when every config param
they logged is the same but for their seeds and where they ran.

Runs of one size that saw fewer images (cooldown branches of a trunk, smaller isoFLOP budgets) are points of the
(N, D) surface and of the compute laws, not of a law against size alone: ``longest_trained`` keeps, per group and
size, the runs that saw the most images.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

DATA_AXIS = "train/images_seen"
LEVEL = 0.95
# Params that differ between repeats of one grid point: seeds (any key ending so), and where and under which name
# a run ran (keys starting so).
SEED_SUFFIX = "seed"
NOT_THE_POINT = ("train.run_dir", "tracking.", "train.progress")
POINT = "grid point"  # the column ``point_keys`` fills


def point_keys(df: pd.DataFrame, size: str) -> pd.Series:
    """Each run's grid point, as text: its size, images seen and the config params it logged (dotted keys), but
    for ``NOT_THE_POINT``."""
    params = [c for c in df.columns if "." in c and "/" not in c and not _varies_within_point(c)]
    columns = [size] + ([DATA_AXIS] if DATA_AXIS in df.columns else []) + params
    return df[columns].astype(object).map(str).agg("|".join, axis=1)  # NaN as "nan" (astype(str) keeps it missing)


def _varies_within_point(column: str) -> bool:
    return column.endswith(SEED_SUFFIX) or column.startswith(NOT_THE_POINT)


def longest_trained(df: pd.DataFrame, size: str, groups: pd.Series) -> pd.Series:
    """True for the runs that saw the most images of their (group, size); every run where none logged it."""
    if DATA_AXIS not in df.columns:
        return pd.Series(True, index=df.index)
    seen = pd.to_numeric(df[DATA_AXIS], errors="coerce")
    keys = [groups.to_numpy(), pd.to_numeric(df[size], errors="coerce").to_numpy()]
    most = seen.groupby(keys, dropna=False).transform("max")
    return seen.isna() | most.isna() | (seen >= most)


def repeats(df: pd.DataFrame, size: str, metrics: list[str], groups: pd.Series) -> pd.DataFrame:
    """One row per (grid point, metric) run more than once: group, size, images seen, metric, runs, mean and the
    mean's 95% interval (low, high)."""
    frame = df.assign(**{"_group": groups.to_numpy(), POINT: point_keys(df, size)})
    rows = []
    for (group, _), runs in frame.groupby(["_group", POINT], sort=False):
        for metric in metrics:
            values = pd.to_numeric(runs[metric], errors="coerce").dropna().to_numpy(dtype=float)
            if len(values) < 2:
                continue
            mean, half = values.mean(), _half_width(values)
            seen = pd.to_numeric(runs[DATA_AXIS], errors="coerce").max() if DATA_AXIS in runs else math.nan
            rows.append({"group": group, size: float(runs[size].iloc[0]), DATA_AXIS: seen, "metric": metric,
                         "runs": len(values), "mean": mean, "low": mean - half, "high": mean + half})
    return pd.DataFrame(rows, columns=["group", size, DATA_AXIS, "metric", "runs", "mean", "low", "high"])


def _half_width(values: np.ndarray) -> float:
    n = len(values)
    return float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
