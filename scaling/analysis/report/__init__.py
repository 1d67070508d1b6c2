"""The report of a study (``scaling analyze``).

- ``plots``: the figures (matplotlib, PNG and SVG).
- ``html``: the self-contained HTML page.
- ``analyze``: the pipeline from runs to fits, figures, ``fits.csv``, ``fits.json`` and the page.
"""
