"""Reading a table: a CSV, its columns as numbers, rows dropped on request; every problem a one-line
UserError."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scaling.core.errors import UserError


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
