"""Type stubs for the compiled extension ``bnfast._core`` (private; use the bnfast package).

Every function checks its arrays (type, dtype, C-contiguity, shape, writability, overlap)
before writing anything and releases the GIL around the kernel.
"""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__version__: str
compiler: str
cxx_flags: str
openmp: bool

# ---- ISA and threads --------------------------------------------------------------------

def active_isa() -> str: ...
def compiled_isas() -> list[str]: ...
def available_isas() -> list[str]: ...
def set_isa(name: str) -> None: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def get_parallel_min_bytes() -> int: ...
def set_parallel_min_bytes(bytes: int) -> None: ...
def swap_thread_parallel_min_bytes(bytes: int) -> int: ...
def empty_kernel_slots() -> list[str]: ...

# ---- batch norm -------------------------------------------------------------------------

def batch_norm_train(
    x: np.ndarray,
    axis: int,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    momentum: float,
    eps: float,
    out: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def batch_norm_eval(
    x: np.ndarray,
    axis: int,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    eps: float,
    out: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def batch_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    axis: int,
    mean: np.ndarray | None,
    invstd: np.ndarray | None,
    weight: np.ndarray | None,
    training: bool,
    out: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

# ---- optimizers -------------------------------------------------------------------------
# Lists of arrays, one per parameter; float32, float64 and bfloat16 parameters may be mixed
# (shape per position the same across lists; a bfloat16 parameter's state is float32 or bfloat16,
# the dtype of the state arrays passed). One call updates every tensor in place. params_bf16:
# bfloat16 copies written from float32 master weights; stochastic_rounding (seed, step): the
# bfloat16 parameters rounded stochastically, keyed by (seed, step, position, element).

def sgd_update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    momentum_buffer: Sequence[np.ndarray] | None,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first: bool,
    *,
    params_bf16: Sequence[np.ndarray | None] | None = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
    step: int = 0,
) -> None: ...
def momentum_update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    velocity: Sequence[np.ndarray],
    lr: float,
    beta: float,
    *,
    params_bf16: Sequence[np.ndarray | None] | None = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
    step: int = 0,
) -> None: ...
def rmsprop_update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    square_avg: Sequence[np.ndarray],
    grad_avg: Sequence[np.ndarray] | None,
    momentum_buffer: Sequence[np.ndarray] | None,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    *,
    params_bf16: Sequence[np.ndarray | None] | None = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
    step: int = 0,
) -> None: ...
def adam_update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    exp_avg: Sequence[np.ndarray],
    exp_avg_sq: Sequence[np.ndarray],
    max_exp_avg_sq: Sequence[np.ndarray] | None,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    decoupled: bool,
    *,
    params_bf16: Sequence[np.ndarray | None] | None = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> None: ...
def clip_grad_norm(
    grads: Sequence[np.ndarray], max_norm: float, error_if_nonfinite: bool
) -> float: ...
def global_norm(arrays: Sequence[np.ndarray]) -> float: ...

# ---- softmax / cross-entropy ----
def softmax(x: np.ndarray, axis: int, out: np.ndarray | None) -> np.ndarray:
    """Softmax along axis."""

def log_softmax(x: np.ndarray, axis: int, out: np.ndarray | None) -> np.ndarray:
    """Log-softmax along axis."""

def softmax_backward(
    y: np.ndarray, dy: np.ndarray, axis: int, out: np.ndarray | None
) -> np.ndarray:
    """Gradient of softmax from the forward output y."""

def log_softmax_backward(
    y: np.ndarray, dy: np.ndarray, axis: int, out: np.ndarray | None
) -> np.ndarray:
    """Gradient of log-softmax from the forward output y."""

def softmax_cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    axis: int,
    weight: np.ndarray | None,
    ignore_index: int,
    reduction: Literal["none", "mean", "sum"],
    label_smoothing: float,
    grad_output: Any,
    out: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, dloss/dlogits); target int32/int64 class indices or float probabilities;
    grad_output a float (mean/sum) or per-row array (none)."""

def sigmoid_binary_cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    weight: np.ndarray | None,
    pos_weight: np.ndarray | None,
    reduction: Literal["none", "mean", "sum"],
    grad_output: Any,
    out: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, dloss/dlogits); weight/pos_weight of the input's size or of its last axis."""

def vmath_exp(x: np.ndarray) -> np.ndarray:
    """The kernels' vectorized exp (vmath.h) elementwise, for measuring its error."""

def vmath_log(x: np.ndarray) -> np.ndarray:
    """The kernels' vectorized log (vmath.h) elementwise, for measuring its error."""

# ---- bfloat16 conversion ----
def round_bfloat16(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = x`` rounded to bfloat16 (float32 ``x``; ``out`` a bfloat16 array of its
    shape): round to nearest even, NaN kept, float32 subnormals to signed zero."""

# ---- speed-of-light kernels (membench) ----
def membench(reads: Sequence[np.ndarray], writes: Sequence[np.ndarray], mode: str) -> float | None:
    """One pass of a trivial kernel over the arrays (csrc/include/bnfast/membench.h).

    ``mode``: ``"read"`` (returns the sum of ``reads``), ``"write"`` / ``"write_nt"`` (each of
    ``writes`` gets the elementwise sum of ``reads``, plain or non-temporal stores),
    ``"update"`` (adds it to each of ``writes`` in place) or ``"exp"`` (writes its exp: a
    compute floor).
    """
