"""Type stubs for the compiled module bnfast._core (private: use the bnfast package)."""

from collections.abc import Sequence

import numpy as np

__version__: str
openmp: bool

def active_isa() -> str: ...
def compiled_isas() -> list[str]: ...
def available_isas() -> list[str]: ...
def set_isa(name: str) -> None: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def empty_kernel_slots() -> list[str]: ...

# ---- batch norm ----
def batchnorm_fwd_train(
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
def batchnorm_fwd_eval(
    x: np.ndarray,
    axis: int,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    eps: float,
    out: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def batchnorm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    axis: int,
    mean: np.ndarray | None,
    invstd: np.ndarray | None,
    weight: np.ndarray | None,
    training: bool,
    out: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

# ---- speed-of-light kernels (membench) ----
def membench(
    reads: Sequence[np.ndarray], writes: Sequence[np.ndarray], mode: str
) -> float | None: ...
