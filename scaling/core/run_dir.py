"""A run directory: what it holds (``RunDir``), claimed once, resumed by the same config, never overwritten by
another."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scaling.core.config import Config
from scaling.core.config.loader import config_to_dict, dump_toml, flatten, read_toml
from scaling.core.errors import UserError


@dataclass(frozen=True)
class JobDir:
    """A directory one resumable job works in (a run's training, its probe): sharded checkpoints and an events
    log. ``root`` may be given as a string."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``: ``step-NNNNNNNN`` directories in DCP's format (``scaling.core.checkpoint``)."""
        return self.root / "checkpoints"

    @property
    def events(self) -> Path:
        """``events.jsonl``: the job's life, one JSON object a line (``scaling.core.events``)."""
        return self.root / "events.jsonl"


@dataclass(frozen=True)
class RunDir(JobDir):
    """Everything a run directory (``train.run_dir``) holds; no other module spells these names.

    ::

        config.toml          the resolved config, saved when the run is claimed; a resume must match it
        checkpoints/         step-NNNNNNNN/ sharded DCP checkpoints (step-NNNNNNNN.tmp/ while one is written)
        last_checkpoint      the newest checkpoint's absolute path, as text
        events.jsonl         start, first_step, preempted, timed_out, cancelled, pruned, finished, ...
        mlflow_run_id        the run's MLflow run id: a resume, eval and the probe log to the same run
        mlflow_claim         a random token, written before the MLflow run is created and set as its tag: a start
                             killed between creating the run and writing its id finds that run again
        tracking-backlog.jsonl  metric points not sent yet beyond what the tracker keeps in memory (a long outage)
        reconstructions/     step-NNNNNNNN.png: validation images above their reconstructions
        cache/               the data's shards, cached locally (unless data.cache_dir is set)
        jobs.jsonl           every job queued for the run (scaling launch, a sweep), oldest first
        submitit/            submitit's pickles and logs; array-*.json points to a job array's task
        eval/                step-NNNNNNNN[-raw]/ of ``scaling eval``: metrics.json, reconstructions.png,
                             code_distances.png
        probe/               ``scaling probe``, the AR probe: probe.toml, tokens/, checkpoints/, events.jsonl,
                             samples/, results.json (see ``ProbeDir``)
        flow-probe/          the flow probe, laid out as probe/ (its tokens/ hold continuous latents)
        export/              generator.safetensors, the default output of ``scaling export``
    """

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def write_test(self) -> Path:
        """Written and removed when the run is claimed: the directory is writable."""
        return self.root / ".write-test"

    @property
    def last_checkpoint(self) -> Path:
        return self.root / "last_checkpoint"

    @property
    def mlflow_run_id(self) -> Path:
        return self.root / "mlflow_run_id"

    @property
    def mlflow_claim(self) -> Path:
        return self.root / "mlflow_claim"

    @property
    def tracking_backlog(self) -> Path:
        return self.root / "tracking-backlog.jsonl"

    def run_id(self) -> str | None:
        """The MLflow run id, or None before the run has one."""
        path = self.mlflow_run_id
        return path.read_text().strip() if path.is_file() else None

    @property
    def reconstructions(self) -> Path:
        return self.root / "reconstructions"

    def reconstruction(self, step: int) -> Path:
        """The validation grid at ``step``."""
        return self.reconstructions / f"step-{step:08d}.png"

    @property
    def data_cache(self) -> Path:
        return self.root / "cache"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs.jsonl"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    def array_pointer(self, name: str) -> Path:
        """A pointer to this run's task of a job array, until its jobs are in ``jobs``."""
        return self.submitit / f"array-{name}.json"

    def array_pointers(self) -> list[Path]:
        return sorted(self.submitit.glob(self.array_pointer("*").name))

    def evaluation(self, step: int, raw: bool = False) -> EvalDir:
        """The evaluation of checkpoint ``step``: its EMA weights (if any), or the raw ones."""
        return EvalDir(self._evals / f"step-{step:08d}{'-raw' if raw else ''}")

    def evaluations(self) -> list[EvalDir]:
        """Every finished evaluation (its metrics are written last), oldest step first."""
        found = (EvalDir(d) for d in sorted(self._evals.glob("step-*")))
        return [e for e in found if e.metrics.is_file()]

    @property
    def _evals(self) -> Path:
        return self.root / "eval"

    @property
    def probe(self) -> ProbeDir:
        """The AR probe's directory."""
        return ProbeDir(self.root / "probe")

    def probe_dir(self, kind: str) -> ProbeDir:
        """The directory of probe ``kind`` (``probe.kinds``): ``probe/`` for ar, ``flow-probe/`` for flow."""
        return self.probe if kind == "ar" else ProbeDir(self.root / f"{kind}-probe")

    @property
    def exported_generator(self) -> Path:
        """Where ``scaling export`` writes the generator unless told otherwise."""
        return self.root / "export" / "generator.safetensors"


@dataclass(frozen=True)
class EvalDir:
    """``eval/step-NNNNNNNN[-raw]/``: one evaluation of one checkpoint."""

    root: Path

    @property
    def metrics(self) -> Path:
        """The metrics as logged, with the step and weights they are of (written last)."""
        return self.root / "metrics.json"

    @property
    def reconstructions(self) -> Path:
        return self.root / "reconstructions.png"

    @property
    def code_distances(self) -> Path:
        """Histogram of the distances from encoder outputs to their codes."""
        return self.root / "code_distances.png"


@dataclass(frozen=True)
class ProbeDir(JobDir):
    """``RUN/probe/`` (or ``RUN/flow-probe/``): a generation probe of the run's tokenizer, resumable like training.

    ::

        probe.toml           the probe's config; another one here is refused
        tokens/              SPLIT/: the split's tokens, code ids or latents (``scaling.probe.tokens``); cache/SPLIT/:
                             its images
        checkpoints/         the probe model's checkpoints
        events.jsonl         the probe job's life
        samples/             cfgSCALE.png: generated images at each guidance scale
        results.json         the probe's metrics, written last: a probe that finds it is done
    """

    @property
    def config(self) -> Path:
        return self.root / "probe.toml"

    def tokens(self, split: str) -> Path:
        """``split``'s cached tokens (``split``: train or val)."""
        return self.root / "tokens" / split

    def token_images(self, split: str) -> Path:
        """``split``'s image shards, cached while its tokens are encoded."""
        return self.root / "tokens" / "cache" / split

    def samples(self, scale: float) -> Path:
        """The grid of images generated at guidance scale ``scale``."""
        return self.root / "samples" / f"cfg{scale:g}.png"

    @property
    def results(self) -> Path:
        return self.root / "results.json"


# Keys that may differ on resume: they change neither the model nor the sample stream (a dataset may
# move, e.g. from local disk to object storage; its shards are verified wherever it is).
# How a run is spread over ranks may change too (elastic resume): the global batch stays train.batch_size.
RESUMABLE_CHANGES = ("train.steps", "train.progress", "train.log_every", "data.train", "data.val",
                     "data.num_workers", "data.cache_dir", "tracking.uri", "tracking.parent_run_id", "parallel.micro_batch_size",
                     "parallel.activation_checkpoint", "parallel.compile", "parallel.channels_last", "parallel.float8",
                     "parallel.float8_recipe", "parallel.float8_emulate", "parallel.reshard_after_forward",
                     "train.async_checkpoint")
# Sections that never touch training: evaluation and the probe read a finished run.
RESUMABLE_SECTIONS = ("eval.", "probe.")


def first_change(saved: Path, cfg: Config, also: tuple[str, ...] = ()) -> tuple[str, object, object] | None:
    """The first key (key, saved value, ``cfg``'s value) where the config saved in ``saved`` and ``cfg`` differ,
    beyond what a resume may change and the keys in ``also``; None when they agree."""
    # A key the saved config lacks was added to the schema since: the run used its default.
    old = flatten(config_to_dict(Config())) | flatten(read_toml(saved))
    new = flatten(config_to_dict(cfg))
    for key in sorted(set(old) | set(new)):
        free = key in RESUMABLE_CHANGES or key in also or key.startswith(RESUMABLE_SECTIONS)
        if not free and old.get(key) != new.get(key):
            return key, old.get(key), new.get(key)
    return None


def check_run_dir(cfg: Config) -> bool:
    """Read-only checks; True when the directory holds this run already (a resume)."""
    run = RunDir(cfg.train.run_dir)
    run_dir, saved = run.root, run.config
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"train.run_dir: {run_dir} exists and is not a directory")
    if saved.is_file():
        changed = first_change(saved, cfg)
        if changed:
            key, old, new = changed
            raise UserError(f"train.run_dir: {run_dir} holds a run with {key} = {old!r}, not {new!r}; "
                            "resume with the same config or choose a new train.run_dir")
        return True
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UserError(f"train.run_dir: {run_dir} is not empty and holds no scaling run; choose a new directory")
    return False


def claim_run_dir(cfg: Config) -> Path:
    """Create the directory (checking that it is writable) and save the resolved config."""
    run = RunDir(cfg.train.run_dir)
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        run.write_test.write_text("ok")
        run.write_test.unlink()
        tmp = run.config.with_name(run.config.name + ".tmp")
        tmp.write_text(dump_toml(cfg))
        os.replace(tmp, run.config)
    except OSError as e:
        raise UserError(f"train.run_dir: {run.root} is not writable ({e.strerror})") from None
    return run.root


def load_run_config(run_dir: Path, overrides: list[str], may_change: tuple[str, ...]) -> Config:
    """A finished run's saved config with ``--key VALUE`` overrides of keys starting with ``may_change`` only
    (what evaluation and the probe may set without touching what was trained). Keys and types are checked here,
    values by ``scaling.models.factory.check_config``."""
    from scaling.core.config.loader import ConfigError, merge, parse_overrides, read_config

    saved = RunDir(run_dir).config
    if not saved.is_file():
        raise UserError(f"RUN: {run_dir} is not a scaling run directory (no {saved.name})")
    changes = parse_overrides(overrides)
    for key in flatten(changes):
        if not key.startswith(may_change):
            raise ConfigError(f"{key}: cannot change a trained run here (allowed: {', '.join(may_change)})")
    return read_config(None, merge(read_toml(saved), changes))
