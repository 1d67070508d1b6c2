"""How long the sweep driver takes to submit a large grid, and how much memory it holds while doing so.

    python benchmarks/sweep_submit.py --trials 200 --profile slurm/dev.toml   # after: bash slurm/devcluster.sh up

It writes a grid sweep of ``--trials`` points (the tiny config, long enough that no trial ends) under a scratch
directory, runs ``scaling sweep run`` with ``max_concurrent = --trials`` so that every trial is submitted at
once, and prints one JSON line: seconds from the driver's start to the study's creation and to the last trial
with a job id, submissions per second, and the driver's peak resident memory (VmHWM). Then it cancels the sweep
(every job ends) and removes the scratch directory unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]


def write_sweep(tmp: Path, trials: int, profile: Path) -> Path:
    from scaling.data.build import build_synthetic

    data = build_synthetic(tmp / "data", num_classes=10, train=200, val=64, size=32, progress=False)
    lrs = ", ".join(f"{1e-4 * (1 + i / trials):.8g}" for i in range(trials))
    path = tmp / "sweep.toml"
    path.write_text(f'''base = "tiny"
root = "{tmp / 'root'}"
profile = "{profile.resolve()}"
max_concurrent = {trials}

[overrides]
"train.steps" = 100000
"data.train" = "{data / 'train'}"
"data.val" = "{data / 'val'}"

[grid.axes]
"optim.lr" = [{lrs}]

[tracking]
uri = "sqlite:///{tmp / 'mlflow.db'}"
''')
    return path


def submitted(tmp: Path) -> int:
    storage = tmp / "root" / "optuna.db"
    if not storage.is_file():
        return -1
    try:
        study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{storage}")
    except KeyError:
        return -1
    return sum("job_id" in t.user_attrs for t in study.get_trials(deepcopy=False))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--profile", default=str(REPO / "slurm" / "dev.toml"))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweep-submit-"))
    path = write_sweep(tmp, args.trials, Path(args.profile))
    cmd = [sys.executable, "-m", "scaling", "sweep", "run", str(path), "--poll", "1"]
    t0 = time.monotonic()
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    created = None
    try:
        while (n := submitted(tmp)) < args.trials:
            if created is None and n >= 0:
                created = time.monotonic() - t0
            if driver.poll() is not None or time.monotonic() - t0 > args.timeout:
                raise SystemExit(f"driver stopped or timed out with {n} of {args.trials} trials submitted")
            time.sleep(0.5)
        wall = time.monotonic() - t0
        rss = peak_rss_mib(driver.pid)
    finally:
        driver.kill()
        driver.wait()
        subprocess.run([sys.executable, "-m", "scaling", "sweep", "cancel", str(path)], capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"trials": args.trials, "profile": args.profile, "study_created_s": round(created or 0, 1),
                      "all_submitted_s": round(wall, 1), "submits_per_s": round(args.trials / wall, 2),
                      "driver_peak_rss_mib": round(rss, 1)}))


if __name__ == "__main__":
    main()
