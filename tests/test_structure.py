"""Import structure of the package: dependencies run one way.

The graph is built from the source with ``ast``, counting imports at module level *and* inside
functions (a lazy import that only dodges a cycle is still a cycle: whichever side runs first,
the two modules need each other).  Imports under ``if TYPE_CHECKING:`` are left out, they never
run.  What is checked: the archive layer sits on the backends, ``config`` on ``service.auth``,
the sources registry on the router; the library never imports the command line; and there is no
import cycle anywhere outside the command-line package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: where each package's sources are (``kernels/`` is installed as ``ccarchive.kernels``)
PACKAGE_DIRS = {"ccarchive": REPO / "src" / "ccarchive", "ccarchive.kernels": REPO / "kernels"}

Graph = dict[str, set[str]]


def _modules(package_dirs: dict[str, Path]) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every ``.py`` file under the package directories."""
    out: dict[str, tuple[Path, bool]] = {}
    for name, root in package_dirs.items():
        for path in sorted(root.rglob("*.py")):
            parts = [name, *path.relative_to(root).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(node: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level, in functions and classes, not in
    ``if TYPE_CHECKING:`` blocks (their ``else:`` does run)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _runtime_imports(ast.Module(body=[stmt], type_ignores=[]))
        else:
            yield from _runtime_imports(child)


def _targets(module: str, is_package: bool, stmt: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The package's modules ``stmt`` loads: the longest known prefix of each imported name."""
    if isinstance(stmt, ast.Import):
        names = [alias.name for alias in stmt.names]
    else:
        base = stmt.module or ""
        if stmt.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[:len(parts) - (stmt.level - 1)]
            base = ".".join(parts + ([stmt.module] if stmt.module else []))
        names = [base] + [f"{base}.{alias.name}" for alias in stmt.names]
    out = set()
    for name in names:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            out.add(".".join(parts))
    return out


def import_graph(package_dirs: dict[str, Path]) -> Graph:
    """Module -> the package's modules it imports at run time (module level or in a function)."""
    modules = _modules(package_dirs)
    known = set(modules)
    graph: Graph = {m: set() for m in modules}
    for module, (path, is_package) in modules.items():
        for stmt in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            graph[module] |= _targets(module, is_package, stmt, known) - {module}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, successors = work[-1]
            for w in successors:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def reachable(graph: Graph, start: str) -> set[str]:
    """Modules ``start`` loads, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _in(module: str, group: str) -> bool:
    return module == group or module.startswith(group + ".")


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(PACKAGE_DIRS)


def test_the_graph_counts_lazy_imports_and_skips_type_checking_ones(tmp_path: Path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\nfrom typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from . import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n    return a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    g = import_graph({"pkg": pkg})
    assert g["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and g["pkg.sub.b"] == {"pkg", "pkg.a"}
    assert g["pkg.c"] == {"pkg.a"}
    assert cycles(g) == [["pkg.a", "pkg.sub.b"]]
    assert reachable(g, "pkg.c") == {"pkg", "pkg.a", "pkg.sub", "pkg.sub.b"}


@pytest.mark.parametrize("upper, lower", [
    ("ccarchive.archive", "ccarchive.backends"),
    ("ccarchive.config", "ccarchive.service.auth"),
    ("ccarchive.sources.registry", "ccarchive.sources.router"),
])
def test_layers_import_one_way(graph: Graph, upper: str, lower: str):
    """``upper`` uses ``lower``; nothing in ``lower`` leads back to ``upper``, even lazily."""
    assert any(_in(m, lower) for m in reachable(graph, upper)), f"{upper} no longer uses {lower}: update this test"
    back = {m: sorted(w for w in reachable(graph, m) if _in(w, upper)) for m in graph if _in(m, lower)}
    assert not {m: w for m, w in back.items() if w}, f"{lower} imports {upper} again (directly or through others)"


def test_the_library_never_imports_the_command_line(graph: Graph):
    library = [m for m in graph if not _in(m, "ccarchive.cli") and m != "ccarchive.__main__"]
    offenders = {m: sorted(w for w in graph[m] if _in(w, "ccarchive.cli")) for m in library}
    assert not {m: w for m, w in offenders.items() if w}


def test_no_import_cycles_anywhere(graph: Graph):
    """Library and command line: every import goes one way (cli/args.py holds what commands share)."""
    assert len(graph) > 60
    assert cycles(graph) == []
