"""Running on many ranks: process group and mesh (runtime), sharding (parallelize), DCP checkpoints."""
