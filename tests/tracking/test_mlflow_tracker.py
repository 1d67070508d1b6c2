"""MLflow tracking against a real server that goes away and comes back mid-run, hangs mid-run, or never answers at
first."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scaling.core.checkpoint import CheckpointStore
from scaling.core.config import TrackingConfig
from scaling.core.run_dir import RunDir
from scaling.tracking.mlflow_tracker import STALL_S, Tracker, create_sqlite_store
from tests.helpers import tiny_args


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


class HangingProxy:
    """A TCP proxy to a port that can stop answering: after ``hang()`` every connection, new or open, stays open
    with nothing read from it forwarded and nothing answered (a server that hangs, not one that is down); after
    ``answer()`` the connections that hung are closed, undelivered, and new ones are forwarded again."""

    def __init__(self, target_port: int):
        self.target, self.hung = target_port, threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(client)
            if self.hung.is_set():
                continue  # held: never read
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.open.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.hung.is_set():  # while hung, what arrives is swallowed: no answer comes
                    dst.sendall(data)
        except OSError:
            pass

    def hang(self) -> None:
        self.hung.set()

    def answer(self) -> None:
        for conn in self.open:
            conn.close()
        self.open = []
        self.hung.clear()

    def close(self) -> None:
        self.answer()
        self.sock.close()


@pytest.mark.slow  # a real MLflow server
def test_a_server_that_stops_answering_mid_run_costs_the_training_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's tracker (background sends) against a server that answers, then hangs mid-run: no flush waits
    more than STALL_S for it (a flush is what a checkpoint does), it is said once that tracking is behind, and
    when the server answers again every point arrives, once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "4")
    port = _free_port()
    server = _start_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
    proxy = HangingProxy(port)
    uri = f"http://127.0.0.1:{proxy.port}"
    try:
        tracker = Tracker(TrackingConfig(uri=uri, experiment="hang"), tmp_path, flush_every_s=0, background=True,
                          retry_s=0.5)
        tracker.start({"a": 1}, run_name="hang")
        for step in range(1, 4):
            tracker.log_metrics({"train/loss": 1.0 / step}, step)
        deadline = time.monotonic() + 60
        while not tracker.flush():  # the server answers: the run is created, then everything is sent
            assert time.monotonic() < deadline
        proxy.hang()
        waited = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(4, 12):  # a step, then a checkpoint's flush, while the server hangs
                tracker.log_metrics({"train/loss": 1.0 / step}, step)
                t0 = time.monotonic()
                assert not tracker.flush()
                waited.append(time.monotonic() - t0)
                time.sleep(0.5)
            # the sender says so when its request times out (4 s): on a loaded machine after the steps above
            deadline = time.monotonic() + 30
            while not any("tracking is behind" in str(w.message) for w in caught) and time.monotonic() < deadline:
                time.sleep(0.1)
        assert max(waited) < STALL_S + 0.5 and sum(waited) < 4, waited  # never the HTTP timeout (4 s) per flush
        behind = [w for w in caught if "tracking is behind" in str(w.message)]
        assert len(behind) == 1, [str(w.message) for w in caught]
        proxy.answer()
        tracker.log_metrics({"train/loss": 1.0 / 12}, 12)
        tracker.finish()
        client = MlflowClient(f"http://127.0.0.1:{port}")
        assert [m.step for m in client.get_metric_history(tracker.run_id, "train/loss")] == list(range(1, 13))
        assert client.get_run(tracker.run_id).info.status == "FINISHED"
    finally:
        proxy.close()
        _stop(server)


@pytest.mark.slow  # a real MLflow server, started twice
def test_server_outage_loses_no_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
    try:
        # At most 4 points in memory: a longer outage's older points wait in the run's backlog file.
        tracker = Tracker(TrackingConfig(uri=uri, experiment="outage"), tmp_path, flush_every_s=0, max_pending=4)
        run_id = tracker.start({"a": 1}, run_name="outage")
        for step in range(1, 4):
            tracker.log_metrics({"train/loss": 1.0 / step}, step)
        assert tracker.flush()
        _stop(server)
        with pytest.warns(UserWarning, match="MLflow unreachable"):
            for step in range(4, 12):  # training goes on while the server is away
                tracker.log_metrics({"train/loss": 1.0 / step}, step)
                assert len(tracker.pending()["metrics"]) <= 4
        assert not tracker.flush()
        backlog = RunDir(tmp_path).tracking_backlog
        assert [json.loads(line)[2] for line in backlog.read_text().splitlines()] == [4, 5, 6, 7, 8, 9]
        assert [m[2] for m in tracker.pending()["metrics"]] == [10, 11]
        server = _start_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
        for step in range(12, 14):
            tracker.log_metrics({"train/loss": 1.0 / step}, step)
        tracker.finish()
        client = MlflowClient(uri)
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert steps == list(range(1, 14)) and not backlog.exists()
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


def test_a_start_killed_before_its_params_were_sent_gets_them_on_resume(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    first = Tracker(TrackingConfig(uri=uri), tmp_path)
    run_id = first.start({"a": 1}, run_name="r")
    first.finish()
    client.log_param(run_id, "b", "2")  # (as a probe adds its own)
    # the run as a start leaves it when killed after naming its run and before its params went out: no "c"
    second = Tracker(TrackingConfig(uri=uri), tmp_path)
    assert second.start({"a": 1, "b": 2, "c": 3}, run_name="r") == run_id
    second.finish()
    assert client.get_run(run_id).data.params == {"a": "1", "b": "2", "c": "3"}


def test_a_start_killed_between_creating_its_run_and_naming_it_finds_that_run(tmp_path: Path) -> None:
    """A process SIGKILLed right after MLflow created its run, before the run directory holds the run's id: the
    next start continues that run (found by the claim token written first), and no second run appears."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = ("import sys; from pathlib import Path; from scaling.core.config import TrackingConfig; "
             "from scaling.tracking.mlflow_tracker import Tracker; "
             "Tracker(TrackingConfig(uri=sys.argv[1], experiment='killed'), Path(sys.argv[2])).start({}, 'r')")
    env = {**os.environ, "SCALING_FAULT": "mlflow-run-created:0"}
    killed = subprocess.run([sys.executable, "-c", start, uri, str(tmp_path)], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not RunDir(tmp_path).mlflow_run_id.exists()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("killed").experiment_id
    (orphan,) = client.search_runs([experiment])
    tracker = Tracker(TrackingConfig(uri=uri, experiment="killed"), tmp_path)
    assert tracker.start({"a": 1}, run_name="r") == orphan.info.run_id
    tracker.log_metrics({"m": 1.0}, 1)
    tracker.finish()
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"} and run.data.metrics == {"m": 1.0}
    assert RunDir(tmp_path).run_id() == run.info.run_id
    other = tmp_path / "other"  # a run directory of its own: a run of its own, not the claimed one
    other.mkdir()
    assert Tracker(TrackingConfig(uri=uri, experiment="killed"), other).start({}, "r") != run.info.run_id


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


@pytest.mark.slow  # a training subprocess and a real MLflow server
def test_a_server_that_never_answers_costs_the_training_nothing(synth_data: Path, tmp_path: Path) -> None:
    """A tracking server that accepts connections and never answers, from the start (a listening socket nobody
    reads): the run starts, trains and checkpoints as if it were not there, says once that tracking is behind, and
    when a real server takes the port mid-run every point arrives and the run ends FINISHED."""
    port = _free_port()
    hung = socket.socket()
    hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hung.bind(("127.0.0.1", port))
    hung.listen(64)  # the kernel completes each connection; no request is ever read
    uri = f"http://127.0.0.1:{port}"
    run_dir = tmp_path / "run"
    args = tiny_args(synth_data, run_dir, uri, **{"train.steps": 30, "train.log_every": 5, "train.val_every": 15,
                                                 "train.ckpt_every": 10, "train.batch_size": 8,
                                                 "optim.warmup_steps": 0, "data.val_samples": 8})
    env = {**os.environ, "SCALING_STEP_DELAY_S": "0.3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "scaling", "train", "tiny", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        deadline = time.monotonic() + 300
        while CheckpointStore(RunDir(run_dir).checkpoints).latest() != 10:  # trained and checkpointed, untracked
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.1)
        assert not RunDir(run_dir).mlflow_run_id.exists()  # no MLflow run yet: the server never answered
        hung.close()
        server = _start_server(tmp_path / "mlflow.db", tmp_path / "artifacts", port)
        err = proc.communicate(timeout=300)[1]
        assert proc.returncode == 0, err[-3000:]
        assert err.count("tracking is behind") == 1, err[-3000:]
        client = MlflowClient(uri)
        run_id = RunDir(run_dir).mlflow_run_id.read_text().strip()
        assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [5, 10, 15, 20, 25, 30]
        assert [m.step for m in client.get_metric_history(run_id, "val/psnr")] == [0, 15, 30]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params["train.steps"] == "30"
    finally:
        hung.close()
        proc.kill()
        if server is not None:
            _stop(server)
