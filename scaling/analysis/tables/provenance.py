"""Metrics measured differently: an rFID on Inception features beside one on a teacher's, gFIDs from different
sample counts or reference statistics cannot be fitted or compared as one quantity. Evaluation and the probe record
how they measured (``provenance/eval/KEY``, ``provenance/probe/KEY`` columns of the runs table); a metric whose
runs disagree on any of those gets a warning that names the runs."""

from __future__ import annotations

import pandas as pd

from scaling.analysis.tables.runs import PROVENANCE_PREFIX

MAX_NAMED = 4  # runs named per value before "and N more"
UNRECORDED = "not recorded"
# The recorded keys that bear on some metrics only (by a word in the metric's name); the others bear on all of
# their stage's metrics.
ONLY = {"fid_": "fid", "gfid_samples": "gfid", "cfg_scales": "gfid", "sampling_seed": "gfid", "temperature": "gfid",
        "top_k": "gfid", "linear_probe_images": "linear"}


def _bears_on(key: str, metric: str) -> bool:
    word = next((w for k, w in ONLY.items() if key.startswith(k)), None)
    return word is None or word in metric


def _stage(metric: str) -> str | None:
    """The stage that measured ``metric``: eval (eval_raw too) or probe; None for training's own metrics."""
    head = metric.split("/", 1)[0]
    return {"eval": "eval", "eval_raw": "eval_raw", "probe": "probe"}.get(head)


def mixed_measurements(rows: pd.DataFrame, metric: str) -> list[str]:
    """One warning per way in which the runs that have ``metric`` were measured differently, naming them."""
    stage = _stage(metric.removesuffix("@best"))
    if stage is None or metric not in rows.columns:
        return []
    prefix = f"{PROVENANCE_PREFIX}{stage}/"
    measured = rows[rows[metric].notna()]
    warnings = []
    for col in sorted(c for c in measured.columns if c.startswith(prefix) and _bears_on(c[len(prefix):], metric)):
        values = measured[col].fillna(UNRECORDED).astype(str)
        if values.nunique() < 2:
            continue
        names = measured["run_name"] if "run_name" in measured.columns else measured.index.astype(str)
        parts = []
        for value, group in names.groupby(values.to_numpy()):
            shown = ", ".join(map(str, group.iloc[:MAX_NAMED]))
            more = f" and {len(group) - MAX_NAMED} more" if len(group) > MAX_NAMED else ""
            parts.append(f"{value} ({shown}{more})")
        warnings.append(f"{metric} was measured differently: {col.removeprefix(prefix)} is " + "; ".join(parts))
    return warnings
