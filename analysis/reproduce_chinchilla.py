"""Refit Chinchilla on Epoch AI's extracted data and print the fit beside Besiroglu et al. (2024).

    python analysis/reproduce_chinchilla.py [--bootstrap 1000] [--seed 0] [--grid auto|epoch]

Data: tests/analysis/data/chinchilla.csv (245 runs read off Chinchilla's Figure 4); D = C / (6 N);
the 5 highest losses dropped (240 left), as in Epoch's replication.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from scaling.analysis.laws.request import FitRequest
from scaling.analysis.tables.fit import fit_table

DATA = Path(__file__).resolve().parents[1] / "tests" / "analysis" / "data" / "chinchilla.csv"
# The plain grid L-BFGS-B fit and the bootstrap SEs (4,000 resamples) from Epoch's replication.
EPOCH_FIT = {"E": 1.8172, "A": 477.8, "B": 2143.9, "alpha": 0.3473, "beta": 0.3672}
EPOCH_SE = {"E": 0.026, "A": 124.5, "B": 1293.0, "alpha": 0.015, "beta": 0.021}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", choices=["auto", "epoch"], default="auto")
    parser.add_argument("--csv", default=str(DATA))
    args = parser.parse_args()

    df = pd.read_csv(args.csv)
    df["D"] = df["Training FLOP"] / (6 * df["Model Size"])
    df = df.drop(index=df["loss"].nlargest(5).index)
    request = FitRequest(form="chinchilla", x="Model Size", x2="D", y="loss", grid=args.grid)
    start = time.perf_counter()
    out = fit_table(df, request, bootstrap=args.bootstrap, seed=args.seed)
    seconds = time.perf_counter() - start

    print(f"{out.n_points} points, {args.grid} grid, {args.bootstrap} bootstrap replicates "
          f"({out.boot.n_failed if out.boot else 0} failed): {seconds:.1f} s")
    print(f"objective {out.objective!r} (Epoch: 1.018e-3), converged: {out.converged}")
    print(f"{'':6} {'fit (full precision)':>24} {'Epoch':>9} {'diff':>8} {'SE':>10} {'Epoch SE':>9}")
    for key, value in out.params.items():
        diff = value / EPOCH_FIT[key] - 1
        print(f"{key:6} {value!r:>24} {EPOCH_FIT[key]:>9} {diff:>+8.2%} {out.se(key):>10.4g} "
              f"{EPOCH_SE[key]:>9}")
    print(f"a = beta/(alpha+beta) = {out.derived['a']!r} (SE {out.se('a'):.3f}; Epoch 0.513, SE 0.020)")
    print(out.law)
    for warning in out.warnings:
        print("warning:", warning)


if __name__ == "__main__":
    main()
