"""Unusable input gives one clear line (exit 2), never a traceback or a silent nonsense curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scaling.analysis.tables import expressions
from scaling.core.errors import UserError


@pytest.fixture
def table(tmp_path):
    """Write a DataFrame to CSV and return its path."""

    def write(df: pd.DataFrame) -> str:
        path = tmp_path / "runs.csv"
        df.to_csv(path, index=False)
        return str(path)

    return write


def power_rows(sizes: list[float]) -> pd.DataFrame:
    n = np.array(sizes, dtype=float)
    return pd.DataFrame({"N": n, "rfid": 0.5 + 40 * n**-0.3})


POWER_ARGS = ["--form", "power", "--x", "N", "--y", "rfid", "--bootstrap", "0"]


@pytest.mark.parametrize(
    ("df", "extra", "expected"),
    [
        (power_rows([1e6, 1e7, 1e8, 1e9]), [], "4 points for a 3-parameter power fit; need at least 5"),
        (power_rows([1e8] * 6), [], "'N' takes 1 distinct value(s) (1e+08); a scaling fit needs at least 3"),
        (power_rows([1e6, 1e6, 1e6, 1e9, 1e9, 1e9]), [], "'N' takes 2 distinct value(s)"),
        (power_rows(np.geomspace(1e6, 1e9, 6)).assign(rfid=[1, 2, np.nan, 3, 4, 5]), [],
         "column 'rfid' has 1 missing or non-numeric value(s); pass --dropna"),
        (power_rows(np.geomspace(1e6, 1e9, 6)).assign(rfid=[1, 2, -1, 3, 4, 5]), [],
         "column 'rfid' has 1 value(s) <= 0"),
        (power_rows(np.geomspace(1e6, 1e9, 6)), ["--x2", "D"], "--x2 applies only to --form chinchilla"),
        (power_rows(np.geomspace(1e6, 1e9, 6)), ["--target", "1e10,3"], "--target for --form power is X"),
        (power_rows(np.geomspace(1e6, 1e9, 6)), ["--target=-1e10"], "--target wants positive numbers"),
    ],
)
def test_bad_fits_give_one_line(user_error, table, df, extra, expected) -> None:
    msg = user_error(["fit", table(df), *POWER_ARGS, *extra])
    assert expected in msg


def test_nan_rows_can_be_dropped_explicitly(fit_json, table) -> None:
    df = power_rows(np.geomspace(1e6, 1e9, 7)).assign(rfid=lambda d: d["rfid"].where(d.index != 3))
    out = fit_json([table(df), *POWER_ARGS, "--dropna"])
    assert out["n_points"] == 6 and out["converged"]


def test_missing_file_column_and_form_arguments(user_error, table, tmp_path) -> None:
    path = table(power_rows(np.geomspace(1e6, 1e9, 6)))
    assert "no such file" in user_error(["fit", str(tmp_path / "nope.csv"), *POWER_ARGS])
    assert "no column 'loss'" in user_error(["fit", path, "--form", "power", "--x", "N", "--y", "loss"])
    assert "needs --x2" in user_error(["fit", path, "--form", "chinchilla", "--x", "N", "--y", "rfid"])
    assert "needs --group" in user_error(["fit", path, "--form", "isoflop", "--x", "N", "--y", "rfid"])
    assert "NAME=EXPRESSION" in user_error(["fit", path, *POWER_ARGS, "--derive", "oops"])


def test_derive_reads_names_with_spaces_and_backticks() -> None:
    df = pd.DataFrame({"Model Size": [2.0, 4.0], "Training FLOP": [120.0, 480.0], "Model": [1.0, 1.0]})
    out = expressions.derive(df, "D=Training FLOP/(6*Model Size)")
    assert out["D"].tolist() == [10.0, 20.0]
    out = expressions.derive(df, "L = log(`Model Size`) + Model ** 2")
    assert out["L"].tolist() == pytest.approx([np.log(2) + 1, np.log(4) + 1])


@pytest.mark.parametrize("expr", ["__import__('os')", "Model.real", "nope * 2", "open(Model)", "Model +"])
def test_derive_rejects_anything_but_arithmetic(expr: str) -> None:
    df = pd.DataFrame({"Model": [1.0, 2.0]})
    with pytest.raises(UserError):
        expressions.derive(df, f"X={expr}")


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--target-scale", "-5", "--target-scale: must be a positive number, got -5"),
    ("--target-compute", "nan", "--target-compute: must be a positive number, got nan"),
    ("--bootstrap", "-1", "--bootstrap must be >= 0, got -1"),
])
def test_analyze_refuses_numbers_that_make_no_sense_before_writing(user_error, table, tmp_path, flag: str, value: str,
                                                                   expected: str) -> None:
    """Each was accepted before (a negative target extrapolated to nonsense; a negative bootstrap skipped every
    fit in silence) and a report written."""
    path = table(power_rows(np.geomspace(1e6, 1e9, 6)).rename(columns={"N": "params_total", "rfid": "eval/rfid"}))
    assert expected in user_error(["analyze", path, "--out", str(tmp_path / "out"), flag, value])
    assert not (tmp_path / "out").exists()
