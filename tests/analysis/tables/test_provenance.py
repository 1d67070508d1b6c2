"""Metrics measured differently across runs are named, with the runs, before they are fitted together."""

from __future__ import annotations

import pandas as pd

from scaling.analysis.tables.provenance import mixed_measurements


def runs() -> pd.DataFrame:
    return pd.DataFrame({
        "run_name": ["a", "b", "c", "d"],
        "eval/rfid": [3.0, 2.0, 1.5, None],
        "eval/psnr": [20.0, 21.0, 22.0, 23.0],
        "probe/ar_val_loss": [3.1, 3.0, 2.9, 2.8],
        "provenance/eval/fid_features": ["inception-v3-compat/2048", "inception-v3-compat/2048", "teacher:vit@64",
                                         "teacher:vit@64"],
        "provenance/eval/image_size": ["32", "32", "32", "32"],
        "provenance/probe/gfid_samples": ["50000", "256", "256", "256"],
    })


def test_a_fid_on_other_features_is_named_with_its_runs() -> None:
    (warning,) = mixed_measurements(runs(), "eval/rfid")
    # d has no rFID: it is not part of the comparison
    assert warning == ("eval/rfid was measured differently: fid_features is inception-v3-compat/2048 (a, b); "
                       "teacher:vit@64 (c)")


def test_keys_that_do_not_bear_on_a_metric_are_not_held_against_it() -> None:
    assert mixed_measurements(runs(), "eval/psnr") == []  # PSNR does not use the FID features
    assert mixed_measurements(runs(), "probe/ar_val_loss") == []  # nor the AR loss the gFID sample count
    assert mixed_measurements(runs(), "val/recon_loss") == []  # training's own metric: nothing recorded


def test_runs_without_a_record_are_named_too() -> None:
    df = runs()
    df.loc[1, "provenance/eval/image_size"] = None
    (warning,) = mixed_measurements(df, "eval/psnr")
    assert warning == "eval/psnr was measured differently: image_size is 32 (a, c, d); not recorded (b)"
