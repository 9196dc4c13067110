"""ISA selection, threads and build information."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from bnfast import _core

__all__ = [
    "active_isa",
    "available_isas",
    "get_num_threads",
    "set_num_threads",
    "show_config",
    "use_isa",
]


def active_isa() -> str:
    """Name of the instruction set the kernels run with now (``"avx512"``, ``"avx2"``, ...)."""
    return _core.active_isa()


def available_isas() -> list[str]:
    """Instruction sets compiled into this build that this CPU supports, lowest first."""
    return list(_core.available_isas())


def _set_isa(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"ISA name must be a str, got {type(name).__name__}")
    _core.set_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[str]:
    """Run the kernels with the instruction set ``name`` inside a ``with`` block.

    Raises
    ------
    ValueError
        If ``name`` is not an ISA bnfast knows.
    RuntimeError
        If the ISA is not compiled into this build or the CPU lacks it.
    """
    previous = _core.active_isa()
    _set_isa(name)
    try:
        yield name
    finally:
        _core.set_isa(previous)


def get_num_threads() -> int:
    """Number of threads the kernels use for large inputs."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels use; results do not depend on it (bitwise).

    Safe to call while other threads run kernels (a kernel may see either count; its result
    is the same). A process forked after bnfast ran a multithreaded kernel (``multiprocessing``
    with the ``fork`` start method) runs its kernels on one thread, and this call has no effect
    there: the OpenMP runtime (libgomp) cannot start threads again in a forked child and would
    hang. Use the ``spawn`` or ``forkserver`` start method for multithreaded kernels in workers.

    Kernels that move less than 4 MiB run on one thread: between calls OpenMP's workers fall
    asleep, and NumPy's OpenBLAS threads spin on the cores for a while after each matrix
    product, so waking threads for a small kernel costs more than it saves. ``bnfast.torch``
    uses 512 KiB: in a PyTorch process built from source the OpenMP pool is shared and PyTorch
    keeps it awake (a wheel bundles its own libgomp, so there each library has its own pool).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    _core.set_num_threads(n)


def config() -> dict[str, object]:
    """The build and run-time configuration as a dict."""
    return {
        "version": _package_version(),
        "active_isa": active_isa(),
        "available_isas": available_isas(),
        "compiled_isas": list(_core.compiled_isas()),
        "bfloat16": _bfloat16_rounding(),
        "num_threads": get_num_threads(),
        "openmp": _openmp_runtime(),
        "compiler": getattr(_core, "compiler", "unknown"),
        "cxx_flags": getattr(_core, "cxx_flags", "unknown"),
        "extension": _core.__file__,
    }


def _bfloat16_rounding() -> str:
    """How the active ISA rounds float32 to bfloat16 (every way gives the same bits)."""
    if active_isa() == "avx512_bf16":
        return "AVX512_BF16 converts (in use)"
    hint = " (AVX512_BF16 available)" if "avx512_bf16" in available_isas() else ""
    return "integer rounding" + hint


def _package_version() -> str:
    """The installed distribution's version (pyproject.toml's, the one place it is written)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("bnfast")
    except importlib.metadata.PackageNotFoundError:  # a build tree on sys.path, not installed
        return _core.__version__  # CMake's SKBUILD_PROJECT_VERSION, from the same pyproject


def _openmp_runtime() -> str:
    """``"no"``, or the OpenMP runtime library the extension loaded (a wheel bundles its own)."""
    if not _core.openmp:
        return "no"
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "gomp" in line or "libomp" in line}
    except OSError:
        return "yes"
    return "yes (" + ", ".join(sorted(os.path.basename(p) for p in libs)) + ")" if libs else "yes"


def show_config() -> None:
    """Print the version, the ISAs, the thread count, OpenMP, and the build's compiler and flags."""
    for key, value in config().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key + ':':<16}{value}")


def _apply_environment() -> None:
    """Honour BNFAST_ISA at import: a forced path never silently runs another."""
    name = os.environ.get("BNFAST_ISA", "").strip()
    if name:
        _set_isa(name)
