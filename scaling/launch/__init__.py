"""Launching training jobs through submitit: cluster profiles, the job callable, the launch command."""
