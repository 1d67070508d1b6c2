"""MLflow tracking against a real server that goes away and comes back mid-run."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scaling.core.config import TrackingConfig
from scaling.tracking.mlflow_tracker import Tracker, create_sqlite_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(db: Path, artifacts: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            assert proc.poll() is None, "mlflow server exited"
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    import os
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # a real MLflow server, started twice
def test_server_outage_loses_no_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
    try:
        tracker = Tracker(TrackingConfig(uri=uri, experiment="outage"), tmp_path, flush_every_s=0)
        run_id = tracker.start({"a": 1}, run_name="outage")
        for step in range(1, 4):
            tracker.log_metrics({"train/loss": 1.0 / step}, step)
        assert tracker.flush()
        _stop(server)
        with pytest.warns(UserWarning, match="MLflow unreachable"):
            for step in range(4, 8):  # training goes on while the server is away
                tracker.log_metrics({"train/loss": 1.0 / step}, step)
        assert not tracker.flush() and len(tracker.pending()["metrics"]) == 4
        server = _start_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
        for step in range(8, 10):
            tracker.log_metrics({"train/loss": 1.0 / step}, step)
        tracker.finish()
        client = MlflowClient(uri)
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert steps == list(range(1, 10))
        assert client.get_run(run_id).info.status == "FINISHED"
    finally:
        _stop(server)


def test_resumed_tracker_skips_steps_already_logged(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(TrackingConfig(uri=uri), tmp_path)
    run_id = first.start({}, run_name="r")
    for step in range(1, 6):
        first.log_metrics({"m": step}, step)
    first.flush()  # then the process "dies" after step 5; its checkpoint was at step 3
    second = Tracker(TrackingConfig(uri=uri), tmp_path)
    assert second.start({}, run_name="r") == run_id  # the same run is continued
    for step in range(4, 9):  # replayed steps 4 and 5 are not logged twice
        second.log_metrics({"m": step}, step)
    second.finish()
    history = MlflowClient(uri).get_metric_history(run_id, "m")
    assert [m.step for m in history] == list(range(1, 9))


def test_a_new_sqlite_store_appears_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep driver SIGKILLed while MLflow migrated its new sqlite store left one that every later driver failed
    on ("table _alembic_tmp_latest_metrics already exists"). A store whose creation dies, in building the migrated
    empty store it is copied from or in copying it, leaves no database; one that completes is usable, with MLflow's
    own Default experiment, and an existing one is not touched."""
    import mlflow.tracking

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the empty store is built: none yet
    (tmp_path / "tmp").mkdir()
    db = tmp_path / "sub" / "mlflow.db"
    uri = f"sqlite:///{db}"

    class Killed(Exception):
        pass

    def dies_midway(self: object) -> None:
        raise Killed

    def torn_copy(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:4096])
        raise Killed
    for target, name, death in ((mlflow.tracking.MlflowClient, "search_experiments", dies_midway),
                                (shutil, "copyfile", torn_copy)):
        with monkeypatch.context() as m:
            m.setattr(target, name, death)
            with pytest.raises(Killed):
                create_sqlite_store(uri)
        assert not db.exists() and not list(db.parent.iterdir())
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [f"scaling-mlflow-{mlflow.__version__}-empty.db"]
    create_sqlite_store(uri)
    (default,) = MlflowClient(uri).search_experiments()
    assert default.name == "Default" and default.artifact_location == str(Path.cwd() / "mlruns" / "0")
    assert [p.name for p in db.parent.iterdir()] == ["mlflow.db"]
    MlflowClient(uri).create_experiment("kept")
    create_sqlite_store(uri)  # exists: untouched
    assert {e.name for e in MlflowClient(uri).search_experiments()} == {"Default", "kept"}
