"""kdcore's imports go one way: a test reads every import from the source (those inside
functions too) and fails on any cycle, and on any import from a lower layer to a higher
one. Layers, top to bottom (README, *Layout*):

- stages, each importing only those after it: job -> grid -> tuning -> trial -> teacher;
- services: the gate, the Ray runtime, the DeepSpeed backend, the teacher-output cache,
  the trial store, the metric stream, names, tables and figures, cost cards and export;
- kinds: models, losses, data, training, metrics, statistics, convergence;
- basics: config helpers, axes, io, errors, progress, the trial schema.
"""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

STAGES = ["job", "grid", "tuning", "trial", "teacher"]
SERVICES = [
    "gate",
    "runtime",
    "zero",
    "teacher_cache",
    "trial_store",
    "tracking",
    "names",
    "per_class",
    "report",
    "summary",
    "table_folder",
    "provenance",
    "plots",
    "cost",
    "export",
]
KINDS = [
    "models",
    "losses",
    "data",
    "training",
    "metrics",
    "stats",
    "convergence",
    "augment",
    "protocols",
]
BASICS = ["settings", "axes", "io", "errors", "progress", "rows"]


def rank(module: str) -> tuple[int, int]:
    """(layer, position among the stages) of a kdcore module; lower is higher up."""
    top = module.split(".")[1] if module.count(".") else ""
    if top in STAGES:
        return 0, STAGES.index(top)
    for layer, names in enumerate([SERVICES, KINDS, BASICS], start=1):
        if top in names:
            return layer, 0
    raise AssertionError(f"{module} belongs to no layer: add it to tests/test_imports.py")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """Whether the dotted ``name`` is a module or package of the repository."""
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """Every kdcore module ``path`` imports, anywhere in the file. ``from package import
    module`` imports that module (as ``from kdcore import errors`` does), not the package's
    ``__init__``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kdcore.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kdcore" or node.module.startswith("kdcore."):
                for alias in node.names:
                    module = f"{node.module}.{alias.name}"
                    found.add(
                        module if node.module == "kdcore" or is_module(module) else node.module
                    )
    return found


GRAPH = {
    module_name(p): imports(p)
    for p in sorted((REPO / "kdcore").rglob("*.py"))
    if module_name(p) != "kdcore"  # the package's lazy run_job, the one entry from outside
}


def test_every_module_has_a_layer():
    for module in GRAPH:
        rank(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module):
    for target in GRAPH[module]:
        (layer, stage), (target_layer, target_stage) = rank(module), rank(target)
        # within a layer any import is fine (the cycle test still applies), but a stage
        # imports only the stages after it
        down = target_layer > layer or (
            target_layer == layer and (layer > 0 or target_stage > stage)
        )
        assert down, f"{module} imports {target}, which is above it"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if state.get(target) is None and target in graph:
                found = visit(target, [*path, target])
                if found:
                    return found
        state[module] = 2
        return None

    for module in graph:
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from kdcore.grid import run_grid\n    import kdcore.job\n")
    assert imports(source) == {"kdcore.grid", "kdcore.job"}


def test_the_checker_reads_a_module_imported_from_its_package(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("from kdcore.data.phantom import labels, generate_patient\n")
    assert imports(source) == {"kdcore.data.phantom.labels", "kdcore.data.phantom"}
