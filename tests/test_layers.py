"""The package's layers: each package of ``scaling`` imports only packages of lower layers (function-level
imports included), so the import graph between packages has no cycle and the tree reads bottom-up."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import imported_names

PACKAGE = Path(__file__).resolve().parents[1] / "scaling"

# Bottom to top. A package imports only packages of the layers below its own.
LAYERS: list[set[str]] = [
    {"core"},                                           # errors, configs, runtime, run directory, checkpoints
    {"analysis", "tracking", "data", "models", "optim"},  # independent libraries over core
    {"losses", "metrics", "parallel"},                  # built on models (and data)
    {"export", "plan"},                                 # a tokenizer exported; its size, FLOPs and memory planned
    {"train", "eval"},                                  # a tokenizer trained (its FLOPs counted as planned), evaluated
    {"probe"},                                          # the generation probe on a trained tokenizer's tokens
    {"launch"},                                         # jobs: train, eval and probe on an executor
    {"sweep"},                                          # many jobs: grids and searches
    {"study"},                                          # the pipeline: data, teacher, sweep, report
    {"cli"},                                            # the command line
    {"__main__"},                                       # python -m scaling
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def package_of(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def module_name(path: Path, root: Path = PACKAGE) -> str:
    return ".".join(path.relative_to(root.parent).with_suffix("").parts)


def package_imports(root: Path = PACKAGE) -> dict[str, list[tuple[str, str]]]:
    """package -> [(imported package, 'file:line'), ...] for imports that cross packages."""
    edges: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        source = package_of(path, root)
        for name, line in imported_names(path, module_name(path, root)):
            parts = name.split(".")
            if parts[0] != "scaling" or len(parts) < 2:
                continue
            target = parts[1]
            if target != source:
                edges[source].append((target, f"{path.relative_to(root.parent)}:{line}"))
    return edges


def test_every_package_has_a_layer() -> None:
    packages = {package_of(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert packages - LAYER.keys() == set(), "place these packages in LAYERS"


def test_packages_import_only_lower_layers() -> None:
    wrong = [f"{where}: {source} (layer {LAYER[source]}) imports {target} (layer {LAYER.get(target)})"
             for source, targets in package_imports().items() for target, where in targets
             if target not in LAYER or LAYER[target] >= LAYER[source]]
    assert wrong == [], "\n".join(wrong)


def test_no_cycle_between_packages() -> None:
    graph = {source: {t for t, _ in targets} for source, targets in package_imports().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_check_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The reader must not miss an import hidden in a function body or written relatively."""
    root = tmp_path / "scaling"
    (root / "core").mkdir(parents=True)
    src = root / "core" / "runtime.py"
    src.write_text("def f():\n    from scaling.study import run\n\nfrom ..sweep import spec\n")
    assert {name for name, _ in imported_names(src, "scaling.core.runtime")} == {"scaling.study.run",
                                                                                "scaling.sweep.spec"}
    assert sorted(package_imports(root)["core"]) == [("study", "scaling/core/runtime.py:2"),
                                                     ("sweep", "scaling/core/runtime.py:4")]
