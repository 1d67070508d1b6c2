"""The analysis side works where torch is not installed, and its CLI module imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# torch (and friends) made unimportable before anything of ours loads.
BLOCK = "import sys\nfor name in ('torch', 'torchvision', 'timm'):\n    sys.modules[name] = None\n"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True,
                          timeout=120)


def test_fit_runs_without_torch(tmp_path: Path) -> None:
    n = np.geomspace(1e6, 1e9, 6)
    pd.DataFrame({"N": n, "loss": 2 + 30 * n**-0.3}).to_csv(tmp_path / "t.csv", index=False)
    code = (
        "from scaling.cli import main\n"
        f"raise SystemExit(main(['fit', {str(tmp_path / 't.csv')!r}, '--form', 'power', '--x', 'N',"
        " '--y', 'loss', '--bootstrap', '5']))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert '"converged": true' in done.stdout


def test_cli_module_is_cheap_to_import() -> None:
    done = run_python(
        "import scaling.analysis.cli\n"
        "heavy = [m for m in ('pandas', 'scipy', 'matplotlib', 'mlflow') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_package_modules_are_cheap_to_import() -> None:
    """``scaling.analysis`` and its subpackages' ``__init__`` modules name their parts and import nothing."""
    done = run_python(
        "import scaling.analysis, scaling.analysis.laws, scaling.analysis.tables, scaling.analysis.report\n"
        "heavy = [m for m in ('numpy', 'pandas', 'scipy', 'matplotlib', 'mlflow') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
