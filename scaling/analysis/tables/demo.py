"""A synthetic runs table shaped like GigaTok's size sweep, for trying the report and for tests.

Six encoder/decoder sizes (52M-974M encoder, 77M-1.9B decoder), each trained with and without
semantic regularisation, several seeds. Metrics follow saturating power laws in total size with 2%
log-normal noise; without semantic regularisation generation worsens with size (GigaTok's dilemma)
while reconstruction improves in both groups. Known exponents let tests check the fitted ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# (encoder, decoder) parameters.
SIZES = ((52.2e6, 77.0e6), (52.2e6, 165.9e6), (140.9e6, 165.9e6), (140.9e6, 456.4e6),
         (400.0e6, 900.0e6), (973.7e6, 1868.2e6))
# metric: (E, term at the smallest size, alpha) of y = E + A N^-alpha; a negative alpha makes the
# metric grow with N.
LAWS = {
    "with": {
        "eval/rfid": (0.5, 1.0, 0.5), "eval/lpips": (0.15, 0.10, 0.4),
        "val/recon_loss": (0.020, 0.030, 0.5), "probe/gfid": (3.0, 4.0, 0.5),
        "probe/ar_val_loss": (7.6, 0.5, 0.4), "probe/linear_err": (0.25, 0.20, 0.4),
    },
    "without": {
        "eval/rfid": (0.8, 1.2, 0.5), "eval/lpips": (0.16, 0.10, 0.4),
        "val/recon_loss": (0.022, 0.030, 0.5), "probe/gfid": (6.0, 3.0, -0.3),
        "probe/ar_val_loss": (7.8, 0.3, -0.3), "probe/linear_err": (0.45, 0.08, -0.3),
    },
}
NOISE = 0.02
IMAGES_SEEN = 1.28e8


def demo_runs(seeds: int = 2, seed: int = 0) -> pd.DataFrame:
    """The synthetic runs table: one row per (size, semantic setting, seed)."""
    rng = np.random.default_rng(seed)
    n_min = min(e + d for e, d in SIZES)
    rows = []
    for group, weight in (("with", 0.5), ("without", 0.0)):
        for enc, dec in SIZES:
            n = enc + dec
            for s in range(seeds):
                row = {"run_name": f"{group}-{n / 1e6:.0f}M-s{s}", "params_total": n,
                       "params_encoder": enc, "params_decoder": dec, "loss.semantic_weight": weight,
                       "train/images_seen": IMAGES_SEEN, "train/flops": 6 * n * IMAGES_SEEN}
                for metric, (e, term, alpha) in LAWS[group].items():
                    row[metric] = (e + term * (n / n_min) ** -alpha) * np.exp(rng.normal(0, NOISE))
                row["probe/linear_acc"] = 1 - row.pop("probe/linear_err")
                row["eval/psnr"] = 10 * np.log10(1 / row["val/recon_loss"])
                rows.append(row)
    return pd.DataFrame(rows)
