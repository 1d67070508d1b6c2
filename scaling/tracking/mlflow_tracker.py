"""MLflow tracking that never kills training.

Metrics are buffered and sent in batches; a failed send keeps them (and pending artifacts) for the next
flush, with one warning, so a tracking server that goes away costs nothing but latency. A resumed run
continues the same MLflow run and drops metric points whose step it already logged, so the history has
no duplicated step.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from scaling.core.config import TrackingConfig
from scaling.core.run_dir import RunDir

log = logging.getLogger(__name__)

# How a run's evaluation and probe metrics were measured: MLflow tags PROVENANCE/eval/KEY, PROVENANCE/probe/KEY.
PROVENANCE = "provenance"
# Fail fast inside one attempt; our buffer does the retrying across steps.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


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
    ``run_dir`` (``RunDir.mlflow_run_id``; a sweep's root keeps its parent run's the same way)."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, enabled: bool = True, flush_every_s: float = 5.0):
        self.cfg, self.run_dir, self.enabled = cfg, run_dir, enabled
        self.flush_every_s = flush_every_s
        self.run_id: str | None = None
        self._pending: list[tuple[str, float, int, int]] = []  # key, value, step, timestamp ms
        self._pending_artifacts: list[tuple[str, str | None]] = []
        self._last_logged: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._warned = False
        self._client = None

    def start(self, params: dict[str, Any], run_name: str) -> str | None:
        """Create the run, or reopen the one this run directory already has."""
        if not self.enabled:
            return None
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        import mlflow
        from mlflow.tracking import MlflowClient

        create_sqlite_store(tracking_uri(self.cfg) or mlflow.get_tracking_uri())
        self._client = MlflowClient(tracking_uri=tracking_uri(self.cfg))
        id_file = RunDir(self.run_dir).mlflow_run_id
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            run = self._client.get_run(self.run_id)
            self._client.update_run(self.run_id, status="RUNNING")
            for key in run.data.metrics:
                history = self._client.get_metric_history(self.run_id, key)
                self._last_logged[key] = max((m.step for m in history), default=-1)
            return self.run_id
        exp = self._client.get_experiment_by_name(self.cfg.experiment)
        exp_id = exp.experiment_id if exp else self._client.create_experiment(self.cfg.experiment)
        tags = {"mlflow.parentRunId": self.cfg.parent_run_id} if self.cfg.parent_run_id else None
        run = self._client.create_run(exp_id, run_name=self.cfg.run_name or run_name, tags=tags)
        self.run_id = run.info.run_id
        tmp = id_file.with_suffix(".tmp")
        tmp.write_text(self.run_id)
        os.replace(tmp, id_file)
        self.log_params(params)
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Params of the run (a stage that reopens it, like the probe, adds its own; a value never changes)."""
        if not self.enabled:
            return
        import mlflow

        items = [mlflow.entities.Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags of the run (unlike params, a later value replaces an earlier one)."""
        if self.enabled:
            import mlflow

            self._client.log_batch(self.run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if step > self._last_logged.get(key, -1):
                self._pending.append((key, float(value), step, now))
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self._pending_artifacts.append((str(path), artifact_path))
            self.flush()

    def flush(self) -> bool:
        """Send what is pending; on failure keep it and warn once. True when nothing is left."""
        if not self.enabled or self._client is None:
            return True
        self._last_flush = time.monotonic()
        from mlflow.entities import Metric

        try:
            while self._pending:
                chunk = self._pending[:1000]
                self._client.log_batch(self.run_id, metrics=[Metric(k, v, t, s) for k, v, s, t in chunk])
                for key, _, step, _ in chunk:
                    self._last_logged[key] = max(step, self._last_logged.get(key, -1))
                del self._pending[: len(chunk)]
            while self._pending_artifacts:
                path, artifact_path = self._pending_artifacts[0]
                self._client.log_artifact(self.run_id, path, artifact_path)
                self._pending_artifacts.pop(0)
        except Exception as e:  # the tracking backend is down or refusing: keep going, retry later
            if not self._warned:
                warnings.warn(f"MLflow unreachable ({type(e).__name__}: {str(e)[:200]}); "
                              f"keeping {len(self._pending)} metric points to retry", stacklevel=2)
                self._warned = True
            return False
        if self._warned:
            log.warning("MLflow reachable again; pending metrics flushed")
            self._warned = False
        return True

    def pending(self) -> dict[str, list]:
        """What could not be sent yet; checkpointed so that a crash loses no metric point."""
        return {"metrics": list(self._pending), "artifacts": list(self._pending_artifacts)}

    def restore_pending(self, pending: dict[str, list]) -> None:
        for key, value, step, ts in pending.get("metrics", []):
            if step > self._last_logged.get(key, -1):
                self._pending.append((key, value, step, ts))
        self._pending_artifacts += [tuple(a) for a in pending.get("artifacts", [])]

    def finish(self, status: str = "FINISHED", retries: int = 5, wait_s: float = 2.0) -> None:
        if not self.enabled or self._client is None:
            return
        for attempt in range(retries):
            if self.flush():
                break
            time.sleep(wait_s * (attempt + 1))
        else:
            warnings.warn(f"MLflow: {len(self._pending)} metric points could not be sent", stacklevel=2)
            return
        try:
            self._client.set_terminated(self.run_id, status=status)
        except Exception as e:
            warnings.warn(f"MLflow: could not mark run {self.run_id} {status}: {e}", stacklevel=2)


def _param_str(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
