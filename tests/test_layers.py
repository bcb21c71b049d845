"""The import layers of docs/internals.md hold: imports only go down, no circles.

Every module under regops/ is parsed (nothing is imported), every import of a
regops module is collected (module level, in functions, under TYPE_CHECKING)
and checked against the layer table below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "regops"

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "regops",
            "regops.errors",
            "regops.secrets",
            "regops.fsutil",
            "regops.configtext",
            "regops.sizes",
            "regops.locks",
            "regops.durations",
            "regops.serving",
            "regops.times",
        ),
    ),
    ("transport", ("regops.http",)),
    ("settings", ("regops.config",)),
    ("values", ("regops.policy",)),
    ("clients", ("regops.gitlab", "regops.registry")),
    ("ops", ("regops.ops",)),
    ("connection", ("regops.connection",)),
    ("models", ("regops.models",)),
    ("sandbox", ("regops.sandbox",)),
    (
        "entry",
        ("regops.cli", "regops.__main__", "regops.commands", "regops.console", "regops.scripting"),
    ),
]
# Only entry points may import inside a function: they defer heavy modules until a
# command needs them, so `regops --help` starts fast. Elsewhere an import in a
# function hides a dependency (or dodges a circle).
LAZY_IMPORTS_ALLOWED = {"entry"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> tuple[int, str]:
    best: tuple[int, int, str] | None = None
    for rank, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), rank, name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[1], best[2]


class Imports(ast.NodeVisitor):
    """(imported module, line, lazy, type-checking-only) for every regops import."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.found: list[tuple[str, int, bool, bool]] = []
        self.depth = 0
        self.type_checking = 0

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        guarded = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        self.type_checking += guarded
        for child in node.body:
            self.visit(child)
        self.type_checking -= guarded
        for child in node.orelse:
            self.visit(child)

    def _add(self, name: str, line: int) -> None:
        if name == "regops" or name.startswith("regops."):
            self.found.append((name, line, self.depth > 0, self.type_checking > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        assert node.level == 0, f"{self.module}:{node.lineno}: relative import"
        base = node.module or ""
        for alias in node.names:
            # `from regops.sandbox import state` imports the submodule regops.sandbox.state
            candidate = f"{base}.{alias.name}"
            is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists()
            self._add(candidate if is_module else base, node.lineno)


def all_imports() -> dict[str, list[tuple[str, int, bool, bool]]]:
    result = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        visitor = Imports(module)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        result[module] = visitor.found
    return result


IMPORTS = all_imports()


def test_every_module_is_in_a_layer():
    for module in IMPORTS:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_imports_only_go_down(module):
    rank, layer = layer_of(module)
    upward = []
    for imported, line, _lazy, _typing in IMPORTS[module]:
        their_rank, their_layer = layer_of(imported)
        if their_rank > rank:
            upward.append(f"{module}:{line} ({layer}) imports {imported} ({their_layer})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_no_import_hidden_in_a_function(module):
    _rank, layer = layer_of(module)
    if layer in LAZY_IMPORTS_ALLOWED:
        return
    lazy = [f"{module}:{line} imports {name}" for name, line, is_lazy, _ in IMPORTS[module]
            if is_lazy]  # fmt: skip
    assert not lazy, "\n".join(lazy)


def test_no_import_circle():
    """The run-time import graph (TYPE_CHECKING imports left out) has no cycle."""
    graph = {
        module: {name for name, _line, lazy, typing in found if not typing and not lazy}
        for module, found in IMPORTS.items()
    }
    # Importing regops.x.y runs regops/__init__ and regops/x/__init__ first: a package
    # importing its own submodules is how packages work, not a circle.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".") and t != module}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_layer_check_catches_an_upward_import():
    """The checker itself: an op importing a model is reported."""
    visitor = Imports("regops.ops.fake")
    visitor.visit(ast.parse("from regops.models import Project\n"))
    ((imported, *_),) = visitor.found
    assert layer_of(imported)[0] > layer_of("regops.ops.fake")[0]
