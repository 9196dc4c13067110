#!/usr/bin/env bash
# bnfast/_core.pyi against the compiled module, with mypy's stubtest: every name the module has
# is in the stub and nothing else, with matching kinds (function, constant). pybind11 functions
# carry no inspectable signature, so the parameter lists are compared by
# tests/test_core_stub.py instead.
#
#   tools/stubtest.sh [python]     # default: .venv/bin/python (bnfast installed in it)
# Installs the pinned mypy into that environment when it lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
mypy_version=2.4.1
if [ "$("$py" -c 'import mypy.version as v; print(v.__version__)' 2>/dev/null)" != "$mypy_version" ]; then
  "$py" -m pip install -q "mypy==$mypy_version"
fi
py=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")  # absolute, the venv's own (no symlink resolution)
# From a neutral directory: from the repository root `python -m` would import the source tree,
# which has no compiled extension unless the install is editable.
cd "$(mktemp -d)"
exec "$py" -m mypy.stubtest bnfast._core
