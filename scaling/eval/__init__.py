"""Evaluation: reconstruction metrics and image grids."""
