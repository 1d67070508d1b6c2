"""Checks that must pass before anything is written, queued or trained: the same on a login node
(``scaling launch``) as in the job (``scaling train``)."""

from __future__ import annotations

from pathlib import Path

from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import Config
from scaling.data.loader import check_splits
from scaling.core.errors import UserError, require_file
from scaling.data.mds import split_samples
from scaling.core.run_dir import RunDir, check_run_dir
from scaling.train.branch import check_branch


def weight_files(cfg: Config) -> list[tuple[str, str]]:
    """(config key, path) of every pretrained-weight file the config needs."""
    files = []
    if cfg.loss.perceptual_weight:
        files.append(("loss.vgg_weights", cfg.loss.vgg_weights))
        if cfg.loss.lpips_weights:
            files.append(("loss.lpips_weights", cfg.loss.lpips_weights))
    if cfg.loss.semantic_weight or cfg.model.semantic_encoder == "teacher":
        files.append(("loss.semantic_teacher_weights", cfg.loss.semantic_teacher_weights))
    if cfg.loss.gan_weight and cfg.loss.disc_kind == "dino":
        files.append(("loss.disc_backbone_weights", cfg.loss.disc_backbone_weights))
    return files


def check_batch_fits(cfg: Config) -> None:
    """A training split must hold one global batch: with fewer samples the loader yields no batch, and the first
    step would wait for one forever."""
    samples = split_samples(cfg.data.train)
    if samples is not None and samples < cfg.train.batch_size:
        raise UserError(f"data.train: {cfg.data.train} holds {samples} samples, fewer than one global batch "
                        f"(train.batch_size = {cfg.train.batch_size})")


def preflight(cfg: Config, *, run_dir: bool = True) -> bool:
    """Data shards, weight files, run directory (unless not ``run_dir``), and a branch's trunk until the branch has
    a checkpoint of its own; True when the run directory holds this run (resume)."""
    check_splits(cfg.data)
    check_batch_fits(cfg)
    for key, path in weight_files(cfg):
        require_file(path, key)
    resuming = check_run_dir(cfg) if run_dir else False
    if cfg.train.branch_from and not CheckpointStore(RunDir(Path(cfg.train.run_dir)).checkpoints).steps():
        check_branch(cfg)
    return resuming
