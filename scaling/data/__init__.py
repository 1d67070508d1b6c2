"""Datasets: procedural synthetic images, ImageFolder conversion, MDS shards and streaming input."""
