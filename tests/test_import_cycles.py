"""No import cycles among tipline's modules.

The graph holds every ``import`` of a tipline module anywhere in a module - at the top
or deferred inside a function - except under ``if TYPE_CHECKING:``: a deferred import
that closes a cycle is still a cycle, only hidden from the interpreter's start-up.
An edge goes to the module named (``from a.b import c`` goes to ``a.b.c`` when that is
a module, else to ``a.b``); the packages a module lives in are not edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tipline

SRC = Path(tipline.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if "migrations" in parts:
            continue  # Alembic scripts are loaded by Alembic, not imported
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    out.add(sub)
                elif target in known:
                    out.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out.discard(module)
    return out


def import_graph() -> dict[str, set[str]]:
    """tipline module -> the tipline modules it imports."""
    modules = _modules()
    known = set(modules)
    return {
        name: _imports(
            ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known
        )
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
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

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_cycle_finder_sees_a_deferred_import_cycle() -> None:
    source_a = ast.parse("import tipline.b\n")
    source_b = ast.parse("def f():\n    from tipline import a\n")
    known = {"tipline.a", "tipline.b"}
    graph = {
        "tipline.a": _imports(source_a, "tipline.a", False, known),
        "tipline.b": _imports(source_b, "tipline.b", False, known),
    }
    assert cycles(graph) == [["tipline.a", "tipline.b"]]


def test_type_checking_imports_are_not_edges() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tipline.b\n")
    assert _imports(tree, "tipline.a", False, {"tipline.a", "tipline.b"}) == set()


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "tipline.services.scan.coordinator" in graph  # the walk found the package
    assert cycles(graph) == []


#: The domain layers: pure logic, settings passed in by services and adapters.
DOMAIN = ("tipline.signals", "tipline.index", "tipline.banks")


def _in_domain(module: str) -> bool:
    return any(module == d or module.startswith(d + ".") for d in DOMAIN)


def test_domain_imports_only_the_domain() -> None:
    """signals/index/banks never import config, store, services or adapters."""
    allowed = ("tipline", "tipline.errors", "tipline._optional")
    bad = {
        (module, target)
        for module, targets in import_graph().items()
        if _in_domain(module)
        for target in targets
        if not _in_domain(target) and target not in allowed
    }
    assert bad == set()


def test_domain_reads_no_environment() -> None:
    modules = _modules()
    names = {"environ", "environb", "getenv"}
    readers = []
    for name, path in modules.items():
        if not _in_domain(name):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in names) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and {a.name for a in node.names} & names
            ):
                readers.append(f"{name}:{node.lineno}")
    assert readers == []
