"""How the global batch (``train.batch_size``) splits over ranks and micro-batches."""

from __future__ import annotations

from scaling.core.config import Config
from scaling.core.errors import UserError


def batch_split(cfg: Config, world_size: int) -> tuple[int, int]:
    """(images per rank per micro-batch, micro-batches per step) for the global ``train.batch_size``."""
    batch = cfg.train.batch_size
    if batch % world_size:
        raise UserError(f"train.batch_size: {batch} does not split over {world_size} ranks")
    per_rank = batch // world_size
    micro = cfg.parallel.micro_batch_size or per_rank
    if per_rank % micro:
        raise UserError(f"parallel.micro_batch_size: {micro} does not divide the {per_rank} images per rank "
                        f"(train.batch_size {batch} over {world_size} ranks)")
    return micro, per_rank // micro
