"""bnfast: fast, verified CPU kernels for training neural networks.

Batch normalization, softmax cross-entropy and optimizer updates as hand-written SIMD kernels
(scalar, AVX2, AVX-512, chosen at import), a NumPy reference of each (:mod:`bnfast.reference`),
and a thin Python layer over them.
"""

import importlib.util as _importlib_util
import os as _os

try:
    from bnfast import _core  # noqa: F401  (the check: is the compiled extension there?)
except ImportError as _exc:
    # The usual cause is a source checkout first on sys.path (python -m/-c run from the
    # repository root after a plain `pip install .`): its bnfast/ folder has no compiled
    # extension and shadows the installed package. Say so, and what to run instead.
    _here = _os.path.dirname(_os.path.abspath(__file__))
    _root = _os.path.dirname(_here)
    try:
        _missing = _importlib_util.find_spec("bnfast._core") is None
    except (ImportError, ValueError):
        _missing = True
    if _missing and _os.path.exists(_os.path.join(_root, "pyproject.toml")):
        raise ImportError(
            f"bnfast's compiled extension is missing from {_here}: this is the source tree, "
            f"which shadows the installed package when Python runs from {_root}. Run from "
            "another directory, or install in place (builds the extension once and imports "
            "bnfast from the source tree, from any directory): pip install -e ."
        ) from _exc
    _problem = "is missing" if _missing else f"could not be imported ({_exc})"
    raise ImportError(
        f"bnfast's compiled extension (bnfast._core) {_problem} in {_here}. Reinstall bnfast: "
        "pip install --force-reinstall <its source folder or wheel>"
    ) from _exc
from bnfast import nn, optim, reference
from bnfast._config import _apply_environment as _apply_environment
from bnfast._config import _package_version as _package_version
from bnfast._config import (
    active_isa,
    available_isas,
    get_num_threads,
    set_num_threads,
    show_config,
    use_isa,
)
from bnfast.functional import (
    BatchNormOutput,
    batch_norm,
    batch_norm_backward,
    log_softmax,
    log_softmax_backward,
    sigmoid_binary_cross_entropy,
    softmax,
    softmax_backward,
    softmax_cross_entropy,
)

__version__: str = _package_version()  # the package metadata (pyproject.toml), read at run time

__all__ = [
    "BatchNormOutput",
    "__version__",
    "active_isa",
    "available_isas",
    "batch_norm",
    "batch_norm_backward",
    "get_num_threads",
    "log_softmax",
    "log_softmax_backward",
    "nn",
    "optim",
    "reference",
    "set_num_threads",
    "show_config",
    "sigmoid_binary_cross_entropy",
    "softmax",
    "softmax_backward",
    "softmax_cross_entropy",
    "use_isa",
]

_apply_environment()
