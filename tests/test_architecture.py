"""The layering of `docs/architecture.md`, checked against the real import graph of `pedvit/` (derived with `ast`,
function-local imports included): no import goes to a package the table does not allow, no two modules import
each other (directly or through others), and modules and functions stay short."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pedvit"
DOC = ROOT / "docs" / "architecture.md"

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80  # docstrings not counted
#: Modules the size rules do not apply to: the scheduler's solver.
SIZE_EXEMPT = {"pedvit.edge.scheduler"}


# ------------------------------------------------------------------------------------------ the graph
@dataclass
class ImportGraph:
    """Modules of a package tree (dotted names; a package is its `__init__`) and their imports of each other."""

    files: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module below `root` (a package directory)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, node: ast.AST, known: dict[str, Path]) -> list[str]:
    """The dotted names one import statement (or `importlib.import_module("literal")` call) asks for."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the module's package, one level up per extra dot
            base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        # `from package import module` imports that module; `from module import name` the module.
        return [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def import_graph(root: Path) -> ImportGraph:
    """Every import anywhere in each module (module level, in functions, in classes) of the tree's own modules."""
    graph = ImportGraph(module_names(root))
    for module, path in graph.files.items():
        targets = graph.edges.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name in _imported(module, path, node, graph.files):
                while name and name not in graph.files and "." in name:  # `import a.b.C` -> a.b
                    name = name.rsplit(".", 1)[0]
                if name in graph.files and name != module:
                    targets.add(name)
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


# ------------------------------------------------------------------------------------------ the rules
def layer_of(module: str) -> str:
    """`pedvit.edge.engine` -> "edge"; the facade modules (`pedvit`, `pedvit.__main__`) -> "pedvit"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else "pedvit"


def allowed_imports(doc: Path) -> dict[str, set[str]]:
    """Package -> the packages (or `package.module`s) its row of the architecture table allows."""
    rows = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = set(re.findall(r"`([\w.]+)`", cells[2]))
    return rows


def violations(graph: ImportGraph, allowed: dict[str, set[str]]) -> list[str]:
    """Every import from one package into another that its row does not allow."""
    out = []
    for module, targets in sorted(graph.edges.items()):
        mine = layer_of(module)
        for target in sorted(targets):
            theirs = layer_of(target)
            if theirs == mine:
                continue
            short = target.split(".", 1)[1] if "." in target else target
            rules = allowed.get(mine, set())
            if theirs not in rules and not any(short == r or short.startswith(r + ".") for r in rules if "." in r):
                out.append(f"{module} imports {target}: `{mine}` may import {sorted(rules) or 'no pedvit package'}")
    return out


def function_lengths(path: Path) -> Iterable[tuple[str, int]]:
    """(name, lines without its docstring) of every function and method in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines -= first.end_lineno - first.lineno + 1
            yield f"{node.name} (line {node.lineno})", lines


# ------------------------------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return import_graph(PACKAGE)


def test_the_table_names_every_package(graph: ImportGraph) -> None:
    allowed = allowed_imports(DOC)
    packages = {layer_of(m) for m in graph.files}
    assert packages == set(allowed), f"docs/architecture.md rows {sorted(allowed)} != packages {sorted(packages)}"
    for package, rules in allowed.items():
        unknown = {r for r in rules if r.split(".")[0] not in packages}
        assert not unknown, f"`{package}` may import unknown packages {unknown}"


def test_no_import_outside_the_table(graph: ImportGraph) -> None:
    problems = violations(graph, allowed_imports(DOC))
    assert not problems, "imports the layering of docs/architecture.md does not allow:\n" + "\n".join(problems)


def test_no_import_cycles(graph: ImportGraph) -> None:
    found = cycles(graph.edges)
    assert not found, "modules that import each other (function-local imports count):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_modules_and_functions_stay_short(graph: ImportGraph) -> None:
    long = []
    for module, path in sorted(graph.files.items()):
        if module in SIZE_EXEMPT:
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {n} lines (limit {MAX_MODULE_LINES})")
        long += [f"{path.relative_to(ROOT)}: {name} has {lines} lines (limit {MAX_FUNCTION_LINES})"
                 for name, lines in function_lengths(path) if lines > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_the_checks_see_local_relative_and_dynamic_imports(tmp_path: Path) -> None:
    """The graph builder on a small tree: a cycle hidden in a function-local relative import, an upward import
    by `importlib.import_module`, a `from package import module`, and what the rules make of them."""
    pkg = tmp_path / "pedvit"
    for sub in ("low", "high"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("from .b import thing\n")
    (pkg / "low" / "b.py").write_text(
        "import importlib\n\n\ndef f():\n    from . import a\n    return importlib.import_module('pedvit.high.c')\n")
    (pkg / "high" / "c.py").write_text("from pedvit.low import a\n\n\nclass K:\n    def g(self):\n        import pedvit.low.b as b\n")
    graph = import_graph(pkg)
    assert graph.edges["pedvit.low.a"] == {"pedvit.low.b"}
    assert graph.edges["pedvit.low.b"] == {"pedvit.low.a", "pedvit.high.c"}
    assert graph.edges["pedvit.high.c"] == {"pedvit.low.a", "pedvit.low.b"}
    assert cycles(graph.edges) == [["pedvit.high.c", "pedvit.low.a", "pedvit.low.b"]]
    problems = violations(graph, {"low": set(), "high": {"low"}})
    assert problems == ["pedvit.low.b imports pedvit.high.c: `low` may import no pedvit package"]
    assert violations(graph, {"low": {"high.c"}, "high": {"low.a", "low.b"}}) == []
    doc = tmp_path / "architecture.md"
    doc.write_text("| package | concern | may import |\n|---|---|---|\n| `low` | x | - (numpy) |\n"
                   "| `high` | y | `low`, `cloud.launch` (torch) |\n")
    assert allowed_imports(doc) == {"low": set(), "high": {"low", "cloud.launch"}}


def test_function_lengths_leave_out_the_docstring(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text('def f():\n    """Doc\n    string."""\n    return 1\n\n\ndef g():\n    x = 1\n    return x\n')
    assert dict(function_lengths(source)) == {"f (line 1)": 2, "g (line 7)": 3}
