"""MLflow tracking that never kills training.

Metrics are buffered and sent in batches, for a training run on a thread of their own; a failed send keeps
them (and pending artifacts) for the next attempt, with one warning, so a tracking server that goes away, or
never answers, costs the training nothing. A resumed run
continues the same MLflow run and drops metric points whose step it already logged, so the history has
no duplicated step.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from scaling.core.config import TrackingConfig
from scaling.core.hooks import fault_point
from scaling.core.run_dir import RunDir

log = logging.getLogger(__name__)

# How a run's evaluation and probe metrics were measured: MLflow tags PROVENANCE/eval/KEY, PROVENANCE/probe/KEY.
PROVENANCE = "provenance"
# Fail fast inside one attempt; our buffer does the retrying across steps.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# A send that has not returned after this long is a server that stopped answering: a flush stops waiting for it
# (the request itself runs on to its HTTP timeout on the sender thread).
STALL_S = 1.0
# The tag that ties an MLflow run to the claim token its run directory holds (``RunDir.mlflow_claim``).
CLAIM_TAG = "scaling_claim"


def tracking_uri(cfg: TrackingConfig) -> str | None:
    """Config wins, then MLFLOW_TRACKING_URI, then MLflow's own default (a local sqlite file)."""
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def create_sqlite_store(uri: str) -> None:
    """A sqlite store that does not exist yet is created whole or not at all. MLflow builds its tables by a chain of
    migrations, and a process killed in the middle (a sweep driver SIGKILLed two seconds in) left a database that
    every later process failed on ("table _alembic_tmp_latest_metrics already exists"). So it is copied, under a
    temporary name, from an empty store migrated once per MLflow version (the migrations took 1.3 of every new
    run's first seconds), and hard-linked into place, which fails harmlessly where another process got there first."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):])
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.copyfile(_empty_store(), tmp)
        with sqlite3.connect(tmp) as db:  # where MLflow itself puts the Default experiment: under this directory
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                       (str(Path.cwd() / "mlruns" / "0"),))
        db.close()
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _write_whole(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file: a reader finds the whole of it or no file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# What a tracker imports (in its sender thread), for a process to preload at start-up (``core.startup``).
IMPORTS = ("mlflow", "mlflow.tracking")


def _empty_store() -> Path:
    """A migrated, empty MLflow sqlite store in the temp directory, built once per MLflow version (atomically:
    two processes that build it at once each rename a whole one into place)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    template = Path(tempfile.gettempdir()) / f"scaling-mlflow-{mlflow.__version__}-empty.db"
    if not template.is_file():
        tmp = template.with_name(f".{template.name}.{uuid.uuid4().hex}.tmp")  # new each time: MLflow caches stores
        try:
            MlflowClient(f"sqlite:///{tmp}").search_experiments()  # runs every migration
            os.replace(tmp, template)
        finally:
            tmp.unlink(missing_ok=True)
    return template


class Tracker:
    """Rank 0's view of one MLflow run; a disabled tracker (other ranks) does nothing. The run's id is kept in
    ``run_dir`` (``RunDir.mlflow_run_id``; a sweep's root keeps its parent run's the same way).

    With ``background`` (the trainer's), every call to MLflow happens on a sender thread: the run's creation (or
    reopening) and its params, metric batches, tags and artifacts, retried every ``retry_s`` while the server does
    not answer, so a tracking server that is down, or that accepts connections and never answers, costs the
    training thread nothing; the points not sent yet go into each checkpoint (``pending``). Without it (the probe,
    evaluation, a sweep's parent run) the same sends happen on the caller's thread."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, enabled: bool = True, flush_every_s: float = 5.0,
                 background: bool = False, retry_s: float = 5.0, max_pending: int = 100_000):
        self.cfg, self.run_dir, self.enabled = cfg, run_dir, enabled
        self.flush_every_s, self.background, self.retry_s = flush_every_s, background, retry_s
        self.max_pending = max_pending  # points kept in memory; older ones wait in the run's tracking backlog
        self._backlog = RunDir(run_dir).tracking_backlog
        self._backlog_sent = 0  # bytes of the backlog file already sent
        self._inflight = 0  # points at the head of _pending that the sender is sending
        self.run_id: str | None = None
        self._pending: list[tuple[str, float, int, int]] = []  # key, value, step, timestamp ms
        self._pending_artifacts: list[tuple[str, str | None]] = []
        self._ops: list[tuple[str, dict]] = []  # params and tags still to log, in order
        self._opening: tuple[dict[str, Any], str] | None = None  # the run still to create or reopen
        self._finishing: str | None = None  # the status to mark once everything is sent
        self._finished = False
        self._last_logged: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._warned = False
        self._sending_since: float | None = None  # when the sender's current attempt began; None while idle
        self._client = None
        self._cond = threading.Condition()
        self._sender: threading.Thread | None = None

    def start(self, params: dict[str, Any], run_name: str) -> str | None:
        """Create the run, or reopen the one this run directory already has; its id (in the background: the id
        of a run being reopened at once, a new run's once it exists, ``run_id``)."""
        if not self.enabled:
            return None
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        id_file = RunDir(self.run_dir).mlflow_run_id
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
        self._opening = (params, run_name)
        if not self.background:
            self._open()
            return self.run_id
        self._sender = threading.Thread(target=self._send_loop, name="mlflow-sender", daemon=True)
        self._sender.start()
        return self.run_id

    def _open(self) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        params, run_name = self._opening
        create_sqlite_store(tracking_uri(self.cfg) or mlflow.get_tracking_uri())
        client = MlflowClient(tracking_uri=tracking_uri(self.cfg))
        id_file = RunDir(self.run_dir).mlflow_run_id
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            run = client.get_run(self.run_id)
            client.update_run(self.run_id, status="RUNNING")
            for key in run.data.metrics:
                history = client.get_metric_history(self.run_id, key)
                self._last_logged[key] = max(max((m.step for m in history), default=-1),
                                             self._last_logged.get(key, -1))
            # A start killed after naming its run but before sending its params: the resume sends them (only
            # the missing keys: a param's value never changes)
            missing = {k: v for k, v in params.items() if k not in run.data.params}
            if missing:
                with self._cond:
                    self._ops.insert(0, ("params", missing))
        else:
            exp = client.get_experiment_by_name(self.cfg.experiment)
            exp_id = exp.experiment_id if exp else client.create_experiment(self.cfg.experiment)
            self.run_id = self._claimed_run(client, exp_id) or self._create_run(client, exp_id, run_name)
            _write_whole(id_file, self.run_id)
            with self._cond:
                self._ops.insert(0, ("params", params))
        self._client, self._opening = client, None

    def _claimed_run(self, client: Any, exp_id: str) -> str | None:
        """The run that a start killed after creating it, before writing its id, left behind: found by the claim
        token it wrote first (without this a re-run start would create a second run, the first one RUNNING
        forever beside it)."""
        claim = RunDir(self.run_dir).mlflow_claim
        if not claim.is_file():
            return None
        from mlflow.entities import ViewType

        runs = client.search_runs([exp_id], f"tags.{CLAIM_TAG} = '{claim.read_text().strip()}'",
                                  run_view_type=ViewType.ALL, max_results=1)
        return runs[0].info.run_id if runs else None

    def _create_run(self, client: Any, exp_id: str, run_name: str) -> str:
        token = uuid.uuid4().hex
        _write_whole(RunDir(self.run_dir).mlflow_claim, token)
        tags = {CLAIM_TAG: token} | ({"mlflow.parentRunId": self.cfg.parent_run_id} if self.cfg.parent_run_id else {})
        run = client.create_run(exp_id, run_name=self.cfg.run_name or run_name, tags=tags)
        fault_point("mlflow-run-created", 0)  # crash tests: the run exists, its id is not written yet
        return run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Params of the run (a stage that reopens it, like the probe, adds its own; a value never changes)."""
        self._enqueue("params", params)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags of the run (unlike params, a later value replaces an earlier one)."""
        self._enqueue("tags", tags)

    def _enqueue(self, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        with self._cond:
            self._ops.append((kind, values))
            self._cond.notify()
        if not self.background:  # sent now, or the caller hears why
            self._send_ops()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        with self._cond:
            self._pending += [(key, float(value), step, now) for key, value in metrics.items()]
            if len(self._pending) > self.max_pending:
                self._spill(len(self._pending) - self.max_pending // 2)
            due = time.monotonic() - self._last_flush >= self.flush_every_s
            if due:
                self._cond.notify()
        if due and not self.background:
            self.flush()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            with self._cond:
                self._pending_artifacts.append((str(path), artifact_path))
                self._cond.notify()
            if not self.background:
                self.flush()

    def flush(self, wait_s: float = 10.0) -> bool:
        """Send what is pending; on failure keep it and warn once. True when nothing is left. In the background: ask
        the sender, and wait for it (at most ``wait_s``) only once the server has answered and while it does: a
        server that never answered is not waited for, and one that stopped answering costs at most ``STALL_S``
        (what is not sent is in the checkpoint that follows; a resumed run drops the steps MLflow already has)."""
        if not self.enabled:
            return True
        if not self.background:
            return self._drain()
        deadline = time.monotonic() + wait_s
        with self._cond:
            self._last_flush = 0.0  # due now
            self._cond.notify_all()
            while self._client is not None and not (self._empty() or self._warned):
                # until the deadline, and not past a send that has stalled (a server that stopped answering mid-run)
                stalled = (self._sending_since or time.monotonic()) + STALL_S
                left = min(deadline, stalled) - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._empty()

    def _empty(self) -> bool:
        return self._client is not None and not (self._pending or self._pending_artifacts or self._ops)

    def _drain(self) -> bool:
        """One attempt at sending everything, in order: the run itself, params and tags, metric points, artifacts,
        then the final status if one was asked for. False (and one warning) when the server did not take it."""
        try:
            if self._opening is not None:
                self._open()
            self._send_ops()
            self._send_metrics()
            self._send_artifacts()
            if self._finishing is not None and not self._finished:
                self._client.set_terminated(self.run_id, status=self._finishing)
                self._finished = True
        except Exception as e:  # the tracking backend is down or refusing: keep going, retry later
            if not self._warned:
                warnings.warn(f"MLflow unreachable ({type(e).__name__}: {str(e)[:200]}); tracking is behind, "
                              f"keeping {len(self._pending)} metric points to retry", stacklevel=2)
                self._warned = True
            with self._cond:
                self._cond.notify_all()
            return False
        with self._cond:
            self._last_flush = time.monotonic()
            if self._warned:
                log.warning("MLflow reachable again; pending metrics flushed")
                self._warned = False
            self._cond.notify_all()
        return True

    def _send_ops(self) -> None:
        import mlflow

        if self._client is None:
            return
        while self._ops:
            kind, values = self._ops[0]
            if kind == "params":
                items = [mlflow.entities.Param(k, _param_str(v)) for k, v in values.items()]
                for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
                    self._client.log_batch(self.run_id, params=items[i : i + 100])
            else:
                self._client.log_batch(self.run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in values.items()])
            with self._cond:
                self._ops.pop(0)

    def _spill(self, n: int) -> None:
        """The oldest ``n`` pending points appended to the backlog file (under the lock, in one write), so that memory
        stays bounded however long the server is away; they are sent before any point kept in memory."""
        start = self._inflight  # a chunk being sent stays where the sender will delete it from
        lines = "".join(json.dumps(p) + "\n" for p in self._pending[start : start + n])
        with open(self._backlog, "a") as f:
            f.write(lines)
        del self._pending[start : start + n]

    def _send_backlog(self) -> None:
        """The backlog file's points, oldest first, 1000 at a time; the file is removed once all are sent."""
        while self._backlog.is_file():
            with open(self._backlog) as f:
                f.seek(self._backlog_sent)
                lines = [line for line in (f.readline() for _ in range(1000)) if line.endswith("\n")]
            if lines:
                self._log_points([tuple(json.loads(line)) for line in lines])
                self._backlog_sent += sum(len(line.encode()) for line in lines)
                continue
            with self._cond:  # nothing left to read: unless a spill just appended, it is done
                if self._backlog.stat().st_size == self._backlog_sent:
                    self._backlog.unlink()
                    self._backlog_sent = 0
            return

    def _log_points(self, points: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        new = [(k, v, s, t) for k, v, s, t in points if s > self._last_logged.get(k, -1)]  # a resume's replays
        if new:
            self._client.log_batch(self.run_id, metrics=[Metric(k, v, t, s) for k, v, s, t in new])
        for key, _, step, _ in new:
            self._last_logged[key] = max(step, self._last_logged.get(key, -1))

    def _send_metrics(self) -> None:
        """Oldest first, so that a key's steps arrive in order (a later step makes MLflow's replay filter drop an
        earlier one): the backlog, then memory 1000 at a time, the backlog again before each chunk (a spill may have
        moved points there meanwhile)."""
        while True:
            self._send_backlog()
            with self._cond:
                chunk = self._pending[:1000]
                self._inflight = len(chunk)
            if not chunk:
                return
            sent = False
            try:
                self._log_points(chunk)
                sent = True
            finally:
                with self._cond:  # one step: a spill in between would move the chunk's neighbours
                    if sent:
                        del self._pending[: len(chunk)]
                    self._inflight = 0

    def _send_artifacts(self) -> None:
        while self._pending_artifacts:
            path, artifact_path = self._pending_artifacts[0]
            self._client.log_artifact(self.run_id, path, artifact_path)
            with self._cond:
                self._pending_artifacts.pop(0)

    def _send_loop(self) -> None:
        """The sender thread: sends when a flush is due or asked for, retries every ``retry_s`` while the server
        does not answer, and ends once the run is marked finished."""
        while not self._finished:
            with self._cond:
                self._cond.wait_for(self._due, timeout=self.flush_every_s)
                self._sending_since = time.monotonic()
            sent = self._drain()
            with self._cond:
                self._sending_since = None
            if not sent:
                time.sleep(self.retry_s)

    def _due(self) -> bool:
        return (self._finishing is not None or time.monotonic() - self._last_flush >= self.flush_every_s) and \
            bool(self._opening or self._ops or self._pending or self._pending_artifacts or self._finishing)

    def pending(self) -> dict[str, list]:
        """What could not be sent yet and is kept in memory; checkpointed so that a crash loses no metric point
        (older points wait in the run's tracking backlog file, which a resumed run sends first)."""
        with self._cond:
            return {"metrics": list(self._pending), "artifacts": list(self._pending_artifacts)}

    def restore_pending(self, pending: dict[str, list]) -> None:
        with self._cond:
            self._pending += [tuple(m) for m in pending.get("metrics", [])]  # already-logged steps: dropped at send
            self._pending_artifacts += [tuple(a) for a in pending.get("artifacts", [])]

    def finish(self, status: str = "FINISHED", retries: int = 5, wait_s: float = 2.0) -> None:
        """Send what is left and mark the run ``status``: in the foreground with ``retries`` attempts, ``wait_s``
        growing between them; in the background the sender's own retries, waited for as long."""
        if not self.enabled or (self._client is None and self._opening is None):
            return
        if self.background:
            self._finish_in_background(status, sum(wait_s * (a + 1) for a in range(retries)))
            return
        self._finishing = status
        for attempt in range(retries):
            if self._drain():
                return
            time.sleep(wait_s * (attempt + 1))
        warnings.warn(f"MLflow: {len(self._pending)} metric points could not be sent", stacklevel=2)

    def _finish_in_background(self, status: str, timeout: float) -> None:
        with self._cond:
            self._finishing = status
            self._last_flush = 0.0
            self._cond.notify_all()
        self._sender.join(timeout)
        if self._sender.is_alive():
            warnings.warn(f"MLflow: {len(self._pending)} metric points could not be sent (they are in the last "
                          f"checkpoint; a resumed run sends them)", stacklevel=2)


def _param_str(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
