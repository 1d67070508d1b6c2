"""The analysis package's layers: laws at the bottom, tables over laws, report over both, cli on top. Each part
imports only parts of lower layers (function-level and relative imports included), so the parts have no cycle.
(tests/test_layers.py checks the same between the packages of ``scaling``.)"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import imported_names

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS = ROOT / "scaling" / "analysis"
PREFIX = "scaling.analysis"

# Bottom to top. A part imports only parts of the layers below its own.
LAYERS: list[set[str]] = [
    {"laws"},    # scaling laws on arrays: forms, fitting, bootstrap, IsoFLOP, sensitivity, outcome
    {"tables"},  # tables of runs: CSV, MLflow, derived columns, trade-offs, a law fitted to columns
    {"report"},  # figures, the HTML page, the analyze pipeline
    {"cli"},     # scaling fit, scaling analyze
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def part_of(path: Path) -> str:
    """The subpackage a file belongs to, or the module's own name for a file directly in the package."""
    rel = path.relative_to(ANALYSIS)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported_parts(path: Path, module: str) -> list[tuple[str, int]]:
    """(part of scaling.analysis, line) for every import in ``path``; ``from scaling.analysis import laws`` counts
    as importing ``laws``."""
    return [(name[len(PREFIX) + 1:].split(".")[0], line) for name, line in imported_names(path, module)
            if name.startswith(PREFIX + ".")]


def crossing_imports() -> list[tuple[str, str, str]]:
    """(importing part, imported part, 'file:line') for imports between different parts."""
    edges = []
    for path in sorted(ANALYSIS.rglob("*.py")):
        source = part_of(path)
        for target, line in imported_parts(path, module_name(path)):
            if target != source:
                edges.append((source, target, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def test_every_part_has_a_layer() -> None:
    parts = {part_of(p) for p in ANALYSIS.rglob("*.py")} - {"__init__"}
    assert parts - LAYER.keys() == set(), "place these parts of scaling/analysis in LAYERS"


def test_parts_import_only_lower_layers() -> None:
    wrong = [f"{where}: {source} (layer {LAYER.get(source)}) imports {target} (layer {LAYER.get(target)})"
             for source, target, where in crossing_imports()
             if source not in LAYER or target not in LAYER or LAYER[target] >= LAYER[source]]
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_function_level_relative_and_package_imports(tmp_path: Path) -> None:
    """The reader must not miss an import hidden in a function body, written relatively, or naming a part
    as a name imported from the package."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from scaling.analysis.report import html\n\n"
                     "from ..tables import runs\nfrom scaling.analysis import cli\nimport numpy\n")
    found = {part for part, _ in imported_parts(probe, "scaling.analysis.laws.probe")}
    assert found == {"report", "tables", "cli"}
