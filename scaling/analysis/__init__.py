"""Analysis of scaling studies: fitting laws to runs, and reporting them. Importable without torch.

- ``forms``, ``fit``, ``bootstrap``, ``isoflop``, ``sensitivity``: the fitting library (saturating
  and plain power laws, Chinchilla's two-variable form, IsoFLOP profiles; Huber on log residuals,
  multi-start L-BFGS-B, bootstrap over runs).
- ``fitting``, ``spec``, ``quality``, ``words``: fit a table and describe the result (``scaling fit``).
- ``runs``, ``tradeoff``, ``plots``, ``report``, ``analyze``: the runs table from MLflow or CSV,
  reconstruction-vs-generation analysis, figures and the HTML report (``scaling analyze``).

Submodules import numpy, scipy, pandas or matplotlib; this package module imports nothing.
"""
