"""bnfast/_core.pyi describes the compiled module: the same functions, with the same parameters
in the same order. (tools/stubtest.sh, mypy's stubtest, checks the names and kinds; it cannot
see the parameters of pybind11 functions, which live only in their docstrings.)"""

from __future__ import annotations

import ast
import pathlib

import bnfast
from bnfast import _core


def runtime_parameters() -> dict[str, list[str]]:
    """Every function of _core and its parameter names, from the signature pybind11 writes as
    the first line of its docstring."""
    params = {}
    for name, fn in vars(_core).items():
        if not name.startswith("_") and callable(fn):
            header = ast.parse(f"def {fn.__doc__.splitlines()[0]}: ...").body[0]
            params[name] = [a.arg for a in header.args.args]  # type: ignore[attr-defined]
    return params


def stub_parameters() -> dict[str, list[str]]:
    stub = pathlib.Path(bnfast.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    return {
        f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, ast.FunctionDef)
    }


def test_stub_parameters_match_the_module():
    assert stub_parameters() == runtime_parameters()
