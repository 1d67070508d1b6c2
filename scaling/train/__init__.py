"""Training: the loop, checkpoints, schedules and the run directory."""
