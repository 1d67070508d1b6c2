"""Run under torchrun: load a run's checkpoint on this world size and save it again elsewhere, unchanged.

``python -m torch.distributed.run --nproc-per-node N tests/parallel/reshard_worker.py RUN_DIR STEP OUT_DIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

from scaling.models.factory import load_config
from scaling.core.runtime import init_runtime
from scaling.core.checkpoint import CheckpointStore
from scaling.train.step import build_trainables


def main(run_dir: Path, step: int, out: Path) -> None:
    cfg = load_config(str(run_dir / "config.toml"))
    rt = init_runtime("cpu")
    try:
        state = build_trainables(cfg, rt, bf16=False).stateful() | {"train": b""}
        CheckpointStore(run_dir / "checkpoints").load(step, state)  # resharded from the saving world size
        CheckpointStore(out).save(step, state)
    finally:
        rt.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
