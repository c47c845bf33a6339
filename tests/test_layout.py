"""The project's layout rules, read from the source: the runtime never imports the tooling
(edge.tools), no two modules import each other (directly or round a longer loop, lazy imports
inside functions included), and every Python file opens with a docstring saying what it is
for."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parent.parent / "edge"
TOOLS = "edge.tools"


def module_name(path: Path) -> str:
    """edge/config/load.py -> edge.config.load; edge/tools/__init__.py -> edge.tools."""
    parts = list(path.relative_to(EDGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(EDGE.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    """`if TYPE_CHECKING:` (or typing.TYPE_CHECKING): its imports never run."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level and inside functions, but not those
    under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(name: str) -> set[str]:
    """The edge modules that module `name` imports (packages' __init__ left out: ours are
    docstrings only)."""
    found: set[str] = set()
    for node in _imports(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            assert node.level == 0, f"{MODULES[name]}:{node.lineno}: use absolute imports"
            base = node.module or ""
            # `from edge.config import load` imports the module edge.config.load.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imported_modules(name) for name in MODULES}


def test_the_runtime_never_imports_the_tooling() -> None:
    """What the daemon and replay run stays apart from evaluation, benchmarks and the demo."""
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if not (name == TOOLS or name.startswith(TOOLS + "."))
        for target in targets
        if target == TOOLS or target.startswith(TOOLS + ".")
    )
    assert offenders == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_loop() -> None:
    """The check below can fail: a three-module loop and a two-module one are reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["d", "e"]]


def test_no_import_cycles() -> None:
    """No module imports one that imports it back, however lazily or indirectly."""
    assert cycles(GRAPH) == []


REPO = EDGE.parent
PYTHON_FILES = sorted(
    p.relative_to(REPO).as_posix()
    for p in [*EDGE.rglob("*.py"), *(REPO / "models").rglob("*.py"),
              *(REPO / "tests").glob("*.py"), *(REPO / "packaging").glob("*.py"),
              REPO / "setup.py"]
    if "cache" not in p.parts and "runs" not in p.parts
)


@pytest.mark.parametrize("path", PYTHON_FILES)
def test_every_python_file_says_what_it_is_for(path: str) -> None:
    """Each file opens with a docstring (a first line at least), read before anything else."""
    docstring = ast.get_docstring(ast.parse((REPO / path).read_text(encoding="utf-8")))
    assert docstring and docstring.strip(), f"{path} has no opening docstring"
