"""Reading a table for a fit and checking that it can support one, with one-line messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scaling.core.errors import UserError

# Fewer distinct scales than this cannot pin down a saturating law's three parameters.
MIN_SCALES = 3


def read_csv(path: str | Path) -> pd.DataFrame:
    """The CSV at ``path``; a missing, unreadable or empty file is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such file: {p}")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {p} as CSV: {str(e).splitlines()[0]}") from None
    if df.empty:
        raise UserError(f"{p} has no rows")
    return df


def require_columns(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        shown = ", ".join(map(str, df.columns[:20]))
        raise UserError(f"no column {missing[0]!r} in the table (columns: {shown})")


def drop_top(df: pd.DataFrame, column: str, k: int) -> pd.DataFrame:
    """``df`` without its ``k`` rows of highest ``column`` (Epoch drops the 5 highest losses)."""
    if k < 0:
        raise UserError(f"--drop-top-loss must be >= 0, got {k}")
    if k >= len(df):
        raise UserError(f"cannot drop {k} of {len(df)} rows")
    return df.drop(index=df[column].nlargest(k).index) if k else df


def numeric(df: pd.DataFrame, columns: list[str], *, dropna: bool) -> pd.DataFrame:
    """The ``columns`` of ``df`` as floats; missing values are an error unless ``dropna``."""
    require_columns(df, columns)
    out = df[columns].apply(pd.to_numeric, errors="coerce")
    bad = out.isna().any(axis=1)
    if bad.any() and not dropna:
        col = next(c for c in columns if out[c].isna().any())
        n = int(out[col].isna().sum())
        raise UserError(
            f"column {col!r} has {n} missing or non-numeric value(s); pass --dropna to drop those rows"
        )
    return out[~bad]


def positive_arrays(
    df: pd.DataFrame, xcols: list[str], ycol: str, *, dropna: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(xs as variables x n, y) for a power-law fit: finite and positive, since it is fitted in logs."""
    data = numeric(df, xcols + [ycol], dropna=dropna)
    for col in xcols + [ycol]:
        values = data[col].to_numpy()
        if not np.isfinite(values).all():
            raise UserError(f"column {col!r} has infinite values")
        if (values <= 0).any():
            n = int((values <= 0).sum())
            raise UserError(f"column {col!r} has {n} value(s) <= 0; power laws are fitted in log space")
    return data[xcols].to_numpy(dtype=float).T, data[ycol].to_numpy(dtype=float)


def check_identifiable(xs: np.ndarray, names: list[str], n_params: int, form: str) -> None:
    """Enough points and distinct scales for ``n_params`` parameters, or a UserError saying which."""
    n = xs.shape[1]
    if n < n_params + 2:
        raise UserError(
            f"{n} points for a {n_params}-parameter {form} fit; need at least {n_params + 2}"
        )
    for row, name in zip(xs, names):
        distinct = np.unique(row)
        if distinct.size < MIN_SCALES:
            shown = ", ".join(f"{v:.3g}" for v in distinct)
            raise UserError(
                f"{name!r} takes {distinct.size} distinct value(s) ({shown}); "
                f"a scaling fit needs at least {MIN_SCALES} scales"
            )
