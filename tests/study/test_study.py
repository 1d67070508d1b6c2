"""``scaling study`` end to end, reduced: data, teacher, a 5-size x semantic-reg grid with probes and evaluation,
fits and report; the driver SIGKILLed at a random moment, then re-run: nothing finished is redone."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from scaling.launch.status import read_jobs, status
from scaling.core import events
from tests.helpers import REPO, run_main

pytestmark = pytest.mark.slow  # a whole study

SIZES = [4, 8, 12, 16, 20]  # five per group: a 3-parameter power law needs 5 points


def write_study(tmp: Path) -> Path:
    """The shipped tiny study's shape at a fraction of its cost, everything under ``tmp``."""
    path = tmp / "study.toml"
    path.write_text(f'''base = "gigatok-tiny"
root = "{tmp / 'root'}"
profile = "{REPO / 'slurm' / 'local.toml'}"
max_concurrent = 2
probe = true

[overrides]
"optim.warmup_steps" = 5
"train.steps" = 20
"train.batch_size" = 16
"model.norm_groups" = 4
"train.val_every" = 20
"train.ckpt_every" = 20
"train.log_every" = 10
"data.val_samples" = 32
"eval.fid_features" = "teacher"
"eval.num_images" = 32
"eval.stats_cache" = "{tmp / 'fid-cache'}"
"probe.size" = "tiny"
"probe.steps" = 20
"probe.batch_size" = 16
"probe.lr" = 1e-3
"probe.log_every" = 10
"probe.ckpt_every" = 10
"probe.gfid_samples" = 32
"probe.cfg_scales" = [1.0, 2.0]
"probe.linear_probe_images" = 300
"probe.linear_probe_epochs" = 10

[grid]
mode = "product"
[grid.axes]
"model.base_channels" = {SIZES}
"loss.semantic_weight" = [0.0, 0.5]

[objective]
metric = "probe/gfid"
direction = "minimize"

[tracking]
uri = "sqlite:///{tmp / 'mlflow.db'}"
experiment = "study"

[study]
bootstrap = 20
sensitivity = false
[study.synth]
path = "{tmp / 'data'}"
classes = 10
train = 300
val = 64
size = 32
[study.teacher]
model = "test_vit"
size = 64
epochs = 3
''')
    return path


def study_trials(tmp: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{tmp / 'root' / 'optuna.db'}"
    return optuna.load_study(study_name="study", storage=storage).trials


def history(run_dir: Path, seed: int) -> str:
    """What a trial's jobs did, for a failure's message: its events and the end of each job's log."""
    logs = "\n".join(f"{log.name}: {log.read_text()[-2000:]}" for log in sorted((run_dir / "submitit").glob("*.err")))
    return f"seed {seed}, {run_dir}: events {events.read(run_dir)}\n{logs}"


def test_study_runs_end_to_end_and_resumes_after_a_kill(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_study(tmp_path)
    cmd = [sys.executable, "-m", "scaling", "study", str(path), "--poll", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    seed = random.randrange(1 << 30)
    kill_after = random.Random(seed).uniform(2, 60)  # data, teacher or trials: the study takes about 100 s
    t0 = time.monotonic()
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    assert driver.poll() is None, "the study ended before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    teacher = tmp_path / "root" / "teacher" / "teacher.safetensors"
    teacher_mtime = teacher.stat().st_mtime_ns if teacher.is_file() else None
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"seed {seed}: {proc.stderr[-3000:]}"
    print(f"reduced study, killed after {kill_after:.0f} s (seed {seed}) and re-run: {time.monotonic() - t0:.0f} s"
          f"\n{proc.stdout}")
    if teacher_mtime is not None:
        assert teacher.stat().st_mtime_ns == teacher_mtime  # a trained teacher is not trained again

    # Ten trials, each trained once from step 0, probed and evaluated once, children of one MLflow parent. The
    # local executor chains the probe behind the training in the trial's one job (Slurm queues it as its own job,
    # tests/launch): it starts once the training has finished.
    done = study_trials(tmp_path)
    assert [t.state for t in done] == [TrialState.COMPLETE] * 10, [(t.number, t.state) for t in done]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for t in done:
        run_dir = Path(t.user_attrs["run_dir"])
        jobs = read_jobs(run_dir)
        assert [(j["job_id"], j["kind"]) for j in jobs] == [(t.user_attrs["job_id"], "train")], history(run_dir, seed)
        assert [e["step"] for e in events.read(run_dir) if e["event"] == "start"] == [0], history(run_dir, seed)
        trained = next(e for e in events.read(run_dir) if e["event"] == "finished")
        probe_start = next(e for e in events.read(run_dir / "probe") if e["event"] == "start")
        assert probe_start["time"] > trained["time"], history(run_dir, seed)
        assert (status(run_dir).state, status(run_dir).step) == ("FINISHED", 20), history(run_dir, seed)
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert {"probe/ar_val_loss", "probe/gfid", "probe/linear_acc", "eval/rfid", "eval/psnr"} <= \
            set(run.data.metrics), run_dir
        assert run.data.params["eval.fid_features"] == "teacher"
        assert t.value == run.data.metrics["probe/gfid"]
    # The semantic loss aligned to the study's teacher where it was on, and only there.
    cos = {t.params["loss.semantic_weight"]: client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
           .get("train/semantic_cos") for t in done}
    assert cos[0.0] is None and cos[0.5] is not None and cos[0.5] > 0

    # The report: a fit and a plot for every fitted metric, in both semantic groups.
    report = tmp_path / "root" / "report"
    fits = json.loads((report / "fits.json").read_text())
    fitted = {(f["y"], f["semantic_group"]) for f in fits if f["form"] == "power"}
    for metric in ("val/recon_loss", "eval/rfid", "probe/ar_val_loss", "probe/gfid", "probe/linear_err"):
        assert {g for m, g in fitted if m == metric} == {"with", "without"}, (metric, fitted)
    html = (report / "report.html").read_text()
    for metric in {m for m, _ in fitted}:
        plot = f"plots/scaling_{metric.replace('/', '_')}.png"
        assert (report / plot).is_file() and plot in html, metric
    assert f"report: {(report / 'report.html').resolve()}" in proc.stdout
    assert "mlflow ui --backend-store-uri" in proc.stdout
    for group in ("with", "without"):  # a law with its exponent, or why there is none
        assert re.search(rf"fit: probe/gfid \({group} semantic reg\.\): (alpha = -?\d|no power law: )", proc.stdout)
    assert re.search(r"semantic reg\.: probe/linear_acc better at \d/5 sizes \(mean ", proc.stdout)

    again = run_main(capsys, "study", str(path), "--poll", "1")  # finished: no training
    assert again.returncode == 0 and "launched" not in again.stdout, again.stderr[-2000:]
    assert all(len(read_jobs(Path(t.user_attrs["run_dir"]))) == 1 for t in study_trials(tmp_path))
