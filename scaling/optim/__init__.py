"""Optimisation: AdamW in torchtitan containers, LR schedules, EMA, gradient clipping."""
