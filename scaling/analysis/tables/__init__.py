"""Tables of runs: reading them, adding columns, comparing runs, and fitting laws to their columns.

- ``read``: a CSV, its columns as numbers, rows dropped on request (one-line errors).
- ``expressions``: derived columns, ``NAME=EXPR`` with arithmetic over other columns.
- ``runs``: the runs table from MLflow (an experiment, a sweep's child runs) or a CSV.
- ``demo``: a synthetic GigaTok-shaped runs table with known exponents.
- ``tradeoff``: reconstruction against generation: per-size means, Pareto front, GigaTok's dilemma,
  encoder against decoder.
- ``fit``: a ``FitRequest`` fitted to a table (``scaling fit``, and each law of ``scaling analyze``).
"""
