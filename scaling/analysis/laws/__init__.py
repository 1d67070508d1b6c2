"""Scaling laws on arrays: what a law is, how it is fitted and how far to trust it.

- ``forms``: power-law forms as sums of log-parameterised power terms (power, Chinchilla).
- ``optimize``: the robust fit: Huber on log residuals, summed; multi-start L-BFGS-B; convergence checks.
- ``derived``: quantities derived from fitted parameters (Chinchilla's allocation, predictions).
- ``bootstrap``: intervals from refits of resampled runs.
- ``isoflop``: IsoFLOP profiles (Chinchilla Approach 2) and their bootstrap.
- ``sensitivity``: refits under other losses, without outliers, without the largest scale.
- ``request``: what to fit (``FitRequest``: form, columns, loss, grid, target) and its consistency check.
- ``outcome``: what came out (``FitOutcome``) and its JSON form.
- ``words``, ``quality``: the outcome as a sentence, and warnings about weak fits.
"""
