"""bnfast: fast, verified CPU kernels for training neural networks.

Batch normalization, softmax cross-entropy and optimizer updates as hand-written SIMD kernels
(scalar, AVX2, AVX-512, chosen at import), a NumPy reference of each (:mod:`bnfast.reference`),
and a thin Python layer over them.
"""

try:
    from bnfast import _core
except ImportError as exc:  # e.g. importing the source tree instead of the installed package
    raise ImportError(
        f"bnfast's compiled extension could not be imported ({exc}). Install the package "
        "(pip install .) and import it from outside the source tree."
    ) from exc
from bnfast import nn, optim, reference
from bnfast._config import _apply_environment as _apply_environment
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

__version__: str = _core.__version__

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
