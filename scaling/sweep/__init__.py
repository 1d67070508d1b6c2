"""Sweeps: scaling grids and Optuna searches over configs, launched as jobs, resumable, recorded in MLflow."""
