"""``RunDir``: the run directory's layout, as the trainer leaves it, named by one module only.

The names on disk are spelled out here on purpose: run directories already written must still be read, so a
rename is a format change, never a refactoring."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from scaling.core import events
from scaling.core.checkpoint import CheckpointStore
from scaling.core.run_dir import EvalDir, JobDir, ProbeDir, RunDir

PACKAGE = Path(__file__).resolve().parents[1] / "scaling"
OWNER = PACKAGE / "core" / "run_dir.py"
STEP, SPLIT, SCALE, NAME = 7, "SPLIT", 7.0, "NAME"  # sample arguments, kept out of the names below

# Methods that name a path from an argument, called with the sample arguments. A new one must be added here.
METHODS = {
    "reconstruction": lambda run: [run.reconstruction(STEP)],
    "array_pointer": lambda run: [run.array_pointer(NAME)],
    "evaluation": lambda run: [run.evaluation(STEP), run.evaluation(STEP, raw=True)],
    "tokens": lambda probe: [probe.tokens(SPLIT)],
    "token_images": lambda probe: [probe.token_images(SPLIT)],
    "samples": lambda probe: [probe.samples(SCALE)],
    "probe_dir": lambda run: [run.probe_dir("ar"), run.probe_dir("flow")],
}
READERS = {"run_id", "evaluations", "array_pointers"}  # methods that read the directory: they name nothing new


def named_paths(where: JobDir | EvalDir) -> list[Path]:
    """Every path ``where`` names (its properties' and, with sample arguments, its methods'), nested ones too."""
    out: list[Path] = []
    for name, member in inspect.getmembers(type(where)):
        if name.startswith("_") or name == "root":
            continue
        if isinstance(member, property):
            found = [getattr(where, name)]
        elif name in METHODS:
            found = METHODS[name](where)
        else:
            assert name in READERS, f"{type(where).__name__}.{name}: add it to METHODS or READERS"
            continue
        for value in found:
            out += named_paths(value) if isinstance(value, (JobDir, EvalDir)) else [value]
            if isinstance(value, (JobDir, EvalDir)):
                out.append(value.root)
    return out


def layout_names() -> set[str]:
    """The file and folder names of a run directory (not the ones made from a step, split, scale or name)."""
    root = Path("RUN")
    parts = {part for path in named_paths(RunDir(root)) for part in path.relative_to(root).parts}
    return {p for p in parts if not any(str(sample) in p for sample in (STEP, SPLIT, NAME))}


def test_the_layout_on_disk() -> None:
    run = RunDir("RUN")
    assert isinstance(run.root, Path)
    assert {str(p.relative_to("RUN")) for p in named_paths(run)} == {
        "config.toml", ".write-test", "checkpoints", "last_checkpoint", "events.jsonl", "mlflow_run_id", "mlflow_claim",
        "tracking-backlog.jsonl",
        "reconstructions", "reconstructions/step-00000007.png", "cache", "jobs.jsonl", "submitit",
        "submitit/array-NAME.json", "export/generator.safetensors",
        "eval/step-00000007", "eval/step-00000007/metrics.json", "eval/step-00000007/reconstructions.png",
        "eval/step-00000007/code_distances.png", "eval/step-00000007-raw", "eval/step-00000007-raw/metrics.json",
        "eval/step-00000007-raw/reconstructions.png", "eval/step-00000007-raw/code_distances.png",
        "probe", "probe/probe.toml", "probe/tokens/SPLIT", "probe/tokens/cache/SPLIT", "probe/checkpoints",
        "probe/events.jsonl", "probe/samples/cfg7.png", "probe/results.json",
        "flow-probe", "flow-probe/probe.toml", "flow-probe/tokens/SPLIT", "flow-probe/tokens/cache/SPLIT",
        "flow-probe/checkpoints", "flow-probe/events.jsonl", "flow-probe/samples/cfg7.png", "flow-probe/results.json"}
    assert run.probe == run.probe_dir("ar") == ProbeDir(Path("RUN/probe"))
    assert JobDir("RUN/probe").events == run.probe.events


def test_readers(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.run_id() is None and run.evaluations() == [] and run.array_pointers() == []
    run.mlflow_run_id.write_text("abc\n")
    for step, raw in ((20, False), (10, True), (30, False)):
        run.evaluation(step, raw).root.mkdir(parents=True)
        if step != 30:  # an evaluation still running: no metrics yet
            run.evaluation(step, raw).metrics.write_text("{}")
    run.submitit.mkdir()
    run.array_pointer("0000-0001").write_text("{}")
    assert run.run_id() == "abc"
    assert run.evaluations() == [run.evaluation(10, raw=True), run.evaluation(20)]
    assert run.array_pointers() == [run.array_pointer("0000-0001")]


@pytest.mark.slow
@pytest.mark.xdist_group("tokenizer_run")  # one worker trains it (conftest)
def test_it_agrees_with_what_the_trainer_writes(tokenizer_run: Path) -> None:
    run = RunDir(tokenizer_run)
    store = CheckpointStore(run.checkpoints)
    assert run.config.is_file() and store.steps() == [200]
    assert Path(run.last_checkpoint.read_text()) == store.path(200).resolve()
    assert events.read(tokenizer_run)[-1]["event"] == "finished" and run.events.is_file()
    assert run.run_id() and run.reconstruction(0).is_file() and run.reconstruction(200).is_file()
    top = {p.relative_to(Path("RUN")).parts[0] for p in named_paths(RunDir(Path("RUN")))}
    # Everything the run holds is named by RunDir (other tests may have added their probe or eval outputs).
    assert {p.name for p in tokenizer_run.iterdir()} <= top


# ---- no module but scaling/core/run_dir.py spells the names

PATH_CALLS = {"Path", "PurePath", "joinpath", "glob", "rglob", "with_name", "open"}


def _documentation(tree: ast.AST) -> set[int]:
    """ids of string statements (docstrings and their like): prose may name what it explains."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def _keys(tree: ast.AST) -> set[int]:
    """ids of dict keys and subscripts: fields of records (an Optuna attribute may share a file's name)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            out |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, ast.Subscript):
            out.add(id(node.slice))
    return out


def _constants(tree: ast.AST) -> set[int]:
    """ids of strings that are constants' values (``PROBE_DIR = "probe"``): spelled once, joined elsewhere."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and all(isinstance(t, (ast.Name, ast.Tuple)) for t in node.targets):
            names = [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            if names and all(n.isupper() for n in names):
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                out |= {id(v) for v in values}
    return out


def _path_pieces(tree: ast.AST) -> set[int]:
    """ids of strings used as path pieces: an operand of ``/``, or an argument of a call that takes a path."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            out |= {id(node.left), id(node.right)}
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in PATH_CALLS:
                out |= {id(a) for a in node.args}
    return out


def spellings(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, string) of each string constant in ``source`` that spells one of ``names``, alone or as a part of a
    '/'-separated path: a file's name (it has a '.' or '_') anywhere; a folder's where the string is a path piece,
    or a constant that is just the folder's name (MLflow keys such as ``eval/psnr`` are neither)."""
    tree = ast.parse(source)
    skip, pieces, constants = _documentation(tree) | _keys(tree), _path_pieces(tree), _constants(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
            continue
        for part in set(node.value.split("/")) & names:
            if "." in part or "_" in part or id(node) in pieces or (id(node) in constants and part == node.value):
                found.append((node.lineno, node.value))
                break
    return sorted(found)


def test_the_check_finds_spellings() -> None:
    names = {"checkpoints", "mlflow_run_id", "events.jsonl"}
    source = '''
"""Docs may say checkpoints/ and events.jsonl."""
a = run_dir / "checkpoints"
b = f"{run_dir / 'mlflow_run_id'} is missing"
c = Path(root, "checkpoints")
d = root / "x/checkpoints"
CHECKPOINTS, OTHER = "checkpoints", "other"
KEYS = ("checkpoints/loss",)
e = open("events.jsonl")
ok = {"mlflow_run_id": 1}["mlflow_run_id"], "checkpoints", kind == "checkpoints", "checkpoints/loss"
'''
    assert [line for line, _ in spellings(source, names)] == [3, 4, 5, 6, 7, 9]


def test_no_module_but_run_dir_spells_a_run_directory_name() -> None:
    names = layout_names()
    assert {"config.toml", "checkpoints", "events.jsonl", "mlflow_run_id", "probe", "results.json"} <= names
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}"
             for path in sorted(PACKAGE.rglob("*.py")) if path != OWNER
             for line, value in spellings(path.read_text(), names)]
    assert not found, "use scaling.core.run_dir.RunDir instead:\n" + "\n".join(found)
