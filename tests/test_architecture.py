"""The architecture as a test: which part may depend on which (design.md, "Dependencies point
one way"), read from the sources (``#include`` lines, ``import`` statements parsed with ``ast``,
function-level imports included), never by importing bnfast.

``python tests/test_architecture.py`` prints the import graph of bnfast's modules.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bnfast"
EXTENSION = "bnfast._core"  # compiled: a node of the graph with no source to parse


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODULES = {*SOURCES, EXTENSION}


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    names: tuple[str, ...]  # what ``from module import ...`` takes; () for ``import module``
    line: int

    def targets(self) -> set[str]:
        """The bnfast modules this statement loads: ``from p import m`` loads ``p.m`` when
        that is a module, else ``p`` (a name defined in ``p``)."""
        if self.module.split(".")[0] != "bnfast":
            return set()
        found = set()
        for name in self.names or ("",):
            candidate = f"{self.module}.{name}" if name else self.module
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate:
                found.add(candidate)
        return found


def imports(module: str) -> list[Import]:
    """Every import statement of ``module``, at any depth (functions, branches, classes)."""
    path = SOURCES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.append(Import(base, tuple(a.name for a in node.names), node.lineno))
    return found


def import_graph() -> dict[str, set[str]]:
    """``module -> the bnfast modules it imports`` for every module of the package."""
    graph: dict[str, set[str]] = {EXTENSION: set()}
    for module in SOURCES:
        graph[module] = {t for imp in imports(module) for t in imp.targets()} - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each back edge of a depth-first search (none iff the graph is a DAG)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if state.get(succ) == 1:
                found.append([*stack[stack.index(succ) :], succ])
            elif succ not in state:
                visit(succ)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def format_graph(graph: dict[str, set[str]]) -> str:
    return "\n".join(
        f"{module} -> {', '.join(sorted(deps)) or '(none)'}"
        for module, deps in sorted(graph.items())
    )


def _violations(modules: list[str], bad) -> list[str]:
    return [
        f"{SOURCES[m].relative_to(ROOT)}:{imp.line}: {imp.module} {imp.names or ''}".rstrip()
        for m in modules
        for imp in imports(m)
        if bad(imp)
    ]


# --- the kernels know nothing of Python ------------------------------------------------------

KERNEL_SOURCES = sorted(
    p
    for p in [
        *(ROOT / "csrc" / "include").rglob("*"),
        *(ROOT / "csrc" / "kernels").rglob("*"),
        ROOT / "csrc" / "dispatch.cpp",
    ]
    if p.suffix in (".h", ".hpp", ".cpp", ".cc", ".inc")
)
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def test_kernels_include_no_python_headers():
    assert len(KERNEL_SOURCES) >= 5, KERNEL_SOURCES
    bad = [
        f"{p.relative_to(ROOT)}: #include {h}"
        for p in KERNEL_SOURCES
        for h in INCLUDE.findall(p.read_text())
        if h.startswith(("pybind11/", "numpy/")) or h.split("/")[-1] in ("Python.h", "pyconfig.h")
    ]
    assert not bad


# --- the oracle shares no code with what it checks -------------------------------------------


def test_reference_imports_nothing_from_bnfast():
    assert not [imp for imp in imports("bnfast.reference") if imp.targets()]


def test_reference_imports_without_the_extension():
    """Loaded from its file with ``bnfast._core`` made unimportable, it still computes."""
    code = f"""
import importlib.util, sys

class NoExtension:
    def find_spec(self, name, path=None, target=None):
        if name == {EXTENSION!r}:
            raise ImportError("blocked: " + name)

sys.meta_path.insert(0, NoExtension())
spec = importlib.util.spec_from_file_location("reference", {str(SOURCES["bnfast.reference"])!r})
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)
import numpy as np
print(reference.softmax(np.zeros(4))[0], {EXTENSION!r} in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.25", "False"]


# --- layers over functions, never the other way ----------------------------------------------


def test_functional_knows_no_layers_optimizers_or_search():
    above = ("bnfast.nn", "bnfast.optim", "bnfast.tune", "bnfast.train")
    assert not _violations(
        ["bnfast.functional"],
        lambda imp: any(t == a or t.startswith(a + ".") for t in imp.targets() for a in above),
    )


def test_backend_switch_depends_on_nothing():
    assert import_graph()["bnfast.backend"] == set()


# --- torch stays behind bnfast.torch ---------------------------------------------------------


def _outside_torch() -> list[str]:
    return [m for m in SOURCES if m != "bnfast.torch" and not m.startswith("bnfast.torch.")]


def test_only_bnfast_torch_imports_torch():
    assert not _violations(_outside_torch(), lambda imp: imp.module.split(".")[0] == "torch")


def test_bnfast_torch_is_imported_only_on_demand():
    """Outside bnfast/torch/, ``bnfast.torch`` is imported inside functions (an optional peer),
    never at module level, so that ``import bnfast.<anything>`` never imports torch."""
    bad = []
    for module in _outside_torch():
        tree = ast.parse(SOURCES[module].read_text())
        for node in tree.body:
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    break
                if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith(
                    "bnfast.torch"
                ):
                    bad.append(f"{module}:{sub.lineno}")
                if isinstance(sub, ast.Import) and any(
                    a.name.startswith("bnfast.torch") for a in sub.names
                ):
                    bad.append(f"{module}:{sub.lineno}")
    assert not bad


# --- the search is a client of the public API ------------------------------------------------


def _private(imp: Import) -> bool:
    if imp.module.split(".")[0] != "bnfast" or imp.module.startswith("bnfast.tune"):
        return False
    return any(part.startswith("_") for part in imp.module.split(".")) or any(
        name.startswith("_") for name in imp.names
    )


def _private_attributes(module: str) -> list[str]:
    """``x._name`` where ``x`` was imported from bnfast outside bnfast.tune."""
    tree = ast.parse(SOURCES[module].read_text())
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            base = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            for alias in node.names:
                source = f"{base}.{alias.name}" if base else alias.name
                if source.startswith("bnfast") and not source.startswith("bnfast.tune"):
                    bound.add(alias.asname or alias.name.split(".")[0])
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound and not node.attr.endswith("__"):
                bad.append(f"{module}:{node.lineno}: {root.id}...{node.attr}")
    return bad


def test_tune_uses_only_the_public_api():
    tune = [m for m in SOURCES if m == "bnfast.tune" or m.startswith("bnfast.tune.")]
    assert len(tune) > 3
    assert not _violations(tune, _private)
    assert not [bad for m in tune for bad in _private_attributes(m)]


# --- no cycles -------------------------------------------------------------------------------


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 20
    assert not cycles(graph), format_graph(graph)


def test_cycle_detection_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("module", "statement", "expected"),
    [
        ("bnfast.nn.layers", "from bnfast import functional as F", {"bnfast.functional"}),
        ("bnfast.nn.layers", "from bnfast import batch_norm", {"bnfast"}),
        ("bnfast.nn.layers", "from .module import Module", {"bnfast.nn.module"}),
        ("bnfast.nn.layers", "from .. import reference", {"bnfast.reference"}),
        ("bnfast.nn", "from . import layers", {"bnfast.nn.layers"}),
        ("bnfast.train", "import bnfast.optim.schedules", {"bnfast.optim.schedules"}),
        ("bnfast.train", "import numpy as np", set()),
    ],
)
def test_imports_resolve_to_modules(module, statement, expected, tmp_path, monkeypatch):
    path = tmp_path / ("__init__.py" if module == "bnfast.nn" else "m.py")
    path.write_text(f"def f():\n    {statement}\n")
    monkeypatch.setitem(SOURCES, module, path)
    assert {t for imp in imports(module) for t in imp.targets()} == expected


if __name__ == "__main__":
    print(format_graph(import_graph()))
