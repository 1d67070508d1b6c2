"""The README's code blocks marked ``<!-- runnable -->`` run as written, in a scratch directory beside the
repository's sweeps, cluster profiles and analysis scripts. (The blocks too long for a test, the study and the
cluster commands, are what tests/study, tests/sweep and tests/launch run.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

MARK = "<!-- runnable -->"


def runnable_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(re.escape(MARK) + r"\n```bash\n(.*?)```", text, flags=re.S)


def test_the_readme_marks_blocks_as_runnable() -> None:
    assert len(runnable_blocks()) >= 3
    assert (REPO / "README.md").read_text().count(MARK) == len(runnable_blocks())  # every mark is on a block


@pytest.mark.slow  # the blocks as a user runs them: a shell, the CLI, the analysis scripts
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.split()[1] if len(b.split()) > 1 else b)
def test_readme_block_runs(block: str, tmp_path: Path) -> None:
    for name in ("sweeps", "slurm", "analysis"):
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{block}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
