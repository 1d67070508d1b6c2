"""Parallelism: activation checkpointing, compile, float8 and FSDP2 per block; how a batch splits over ranks."""
