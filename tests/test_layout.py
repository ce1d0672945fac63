"""The package layout: no import cycles, and the node side never imports the host side."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("testbed", "testbed_node", "testbed_contract")


def module_name(path: Path, root: Path) -> str:
    """`testbed/lifecycle/create.py` -> `testbed.lifecycle.create`; a package is its __init__."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules a module imports anywhere in its body (TYPE_CHECKING and function-level
    imports count: they are how cycles hide). `from a import b` is the module `a.b` when that is
    a module, else `a`."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(_nearest(a.name, known) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else _nearest(base, known))
    out.discard("")
    out.discard(name)
    return out


def _nearest(dotted: str, known: set[str]) -> str:
    """The module itself, or the closest enclosing package we know ("" for outside ones)."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return ""


def graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports."""
    mods = sources(root, packages)
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles() -> None:
    found = cycles(graph(ROOT))
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(("package", "forbidden"), [
    ("testbed_node", ("testbed",)),
    ("testbed_contract", ("testbed", "testbed_node")),
])
def test_the_node_side_never_imports_the_host_side(package: str, forbidden: tuple[str, ...]
                                                   ) -> None:
    edges = graph(ROOT)
    bad = sorted(f"{m} imports {t}" for m, targets in edges.items()
                 if m.split(".")[0] == package for t in targets
                 if t.split(".")[0] in forbidden)
    assert bad == []


def test_the_checker_finds_a_cycle_and_resolves_from_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "testbed"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from testbed.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from .. import a\n")
    (pkg / "c.py").write_text("import testbed.sub.b\n")
    edges = graph(tmp_path, ("testbed",))
    assert edges["testbed.a"] == {"testbed.sub.b"}
    assert edges["testbed.sub.b"] == {"testbed.a"}
    assert cycles(edges) == [["testbed.a", "testbed.sub.b"]]
    (pkg / "sub" / "b.py").write_text("")
    assert cycles(graph(tmp_path, ("testbed",))) == []
