"""The layer rule: every import inside the package points down (or sideways), and none closes a circle.

Layers, lowest first (a module may import from its own layer and the layers below)::

    base         state, neighbors, precision, and private helpers (_scatter, _validation, _started)
    models       score backends: MatterGen adapter, analytic backends, the tiny model builder
    potentials   ML potentials as batched torch energies;  thermo: reference hulls, compositions
    constraints  objectives
    calculators  ASE calculators (loss as energy, energy above hull)
    sampling     guidance settings, guidance math, GuidedDiffusion
    runs         generation runs: configuration, batching, the run folder, resume
    analysis     validation pipeline
    training     aseguide train, model evaluation
    cli          the command line

The package root (``aseguide/__init__.py``, ``__main__``) and the modules kept at their
old paths for compatibility (thin re-exports) sit above every layer: they may import
anything, and no layered module may import them. ``aseguide.testing`` is for tests only:
no layered module imports it. Imports are read from the source (``ast``), function-level
and ``TYPE_CHECKING`` imports included: a dependency is a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aseguide"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("aseguide.state", "aseguide.neighbors", "aseguide.precision", "aseguide._scatter",
              "aseguide._validation", "aseguide._started", "aseguide.composition")),
    ("models", ("aseguide.models",)),
    ("potentials", ("aseguide.potentials", "aseguide.thermo")),
    ("constraints", ("aseguide.constraints",)),
    ("calculators", ("aseguide.calculators",)),
    ("sampling", ("aseguide.sampling",)),
    ("runs", ("aseguide.runs",)),
    ("analysis", ("aseguide.analysis",)),
    ("training", ("aseguide.training",)),
    ("cli", ("aseguide.cli",)),
]
#: Old module paths kept as thin re-exports (above every layer).
COMPAT = ("aseguide.guidance", "aseguide.optimize", "aseguide.generate", "aseguide.io", "aseguide.train",
          "aseguide.evaluation", "aseguide.cli_generate", "aseguide.calculators.hull",
          "aseguide.calculators.potentials")
TOP = ("aseguide", "aseguide.__main__")
TESTING = "aseguide.testing"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int | None:
    """Index of the layer of a module; ``None`` for the root, compatibility modules and testing."""
    if name in TOP or any(_within(name, c) for c in COMPAT) or _within(name, TESTING):
        return None
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(_within(name, p) for p in prefixes):
            return index
    raise AssertionError(f"module {name} is in no layer: add it to LAYERS in tests/test_layers.py")


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The aseguide modules ``name`` imports (resolved to modules, relative imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _within(alias.name, "aseguide"):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not _within(source, "aseguide"):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in modules else source)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for name, targets in graph.items():
        own = layer_of(name)
        if own is None:
            continue
        for target in sorted(targets):
            other = layer_of(target)
            if other is None:
                kind = "testing" if _within(target, TESTING) else "a compatibility re-export or the root"
                problems.append(f"{name} ({LAYERS[own][0]}) imports {target} ({kind})")
            elif other > own:
                problems.append(f"{name} ({LAYERS[own][0]}) imports {target} ({LAYERS[other][0]}): points up")
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), layered modules only."""
    nodes = [n for n in graph if layer_of(n) is not None]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in graph or layer_of(w) is None:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


def test_every_import_points_down():
    problems = upward_imports(import_graph())
    assert not problems, "imports against the layer rule:\n" + "\n".join(problems)


def test_no_import_closes_a_circle():
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_catches_an_upward_import_and_a_circle():
    graph = {"aseguide.state": {"aseguide.models.base"}, "aseguide.models.base": {"aseguide.state"},
             "aseguide.models.analytic": {"aseguide.models.base"}}
    assert upward_imports(graph) == ["aseguide.state (base) imports aseguide.models.base (models): points up"]
    assert circles(graph) == [["aseguide.models.base", "aseguide.state"]]
    assert upward_imports({"aseguide.models.registry": {"aseguide.testing"}}) == [
        "aseguide.models.registry (models) imports aseguide.testing (testing)"]
