"""Analysis of scaling studies: fitting laws to runs, and reporting them. Importable without torch.

Three layers, each importing only those below it (tests/analysis/test_layers.py checks this):

- ``laws``: scaling laws on arrays (numpy, scipy): their forms, the robust multi-start fit, bootstrap
  intervals, IsoFLOP profiles, sensitivity refits, derived quantities; what to fit (``FitRequest``)
  and what came out (``FitOutcome``, the JSON of ``scaling fit``), with its warnings and the law in words.
- ``tables``: tables of runs (pandas): reading a CSV, derived columns, the runs table from MLflow,
  the synthetic demo table, reconstruction-vs-generation trade-offs, and fitting a law to a table's
  columns.
- ``report``: figures, the HTML report, and the ``scaling analyze`` pipeline that writes them.

``cli`` (``scaling fit``, ``scaling analyze``) sits on top. Submodules import numpy, scipy, pandas or
matplotlib; this module and the subpackages' ``__init__`` modules import nothing.
"""
