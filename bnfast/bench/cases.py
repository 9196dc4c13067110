"""The case list: one :class:`Case` per kernel and reference shape, with its byte formula, its
speed-of-light passes and a ``build()`` that returns the implementations to time.

Case ids are the public function's name, with a pass suffix where one operation has several
kernels: ``batch_norm_train``, ``batch_norm_eval``, ``batch_norm_backward``,
``softmax_cross_entropy``, ``sgd``, ``sgd_momentum``, ``rmsprop``, ``adam``, ``adamw``.
JSON files written before the rename (``bench/results/``) use the ids of :data:`OLD_IDS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

import bnfast
from bnfast import reference as R
from bnfast._arrays import aligned_empty, bfloat16

__all__ = [
    "CACHE_BYTES",
    "DTYPES",
    "OLD_IDS",
    "OPTIMIZER_CASES",
    "Case",
    "Impl",
    "Pass",
    "cases",
    "torch_peers",
]

F32 = np.dtype(np.float32)
CACHE_BYTES = 512 * 1024  # data a kernel may keep in cache between two passes (half an L2)

# Case ids in JSON files written before the ids were the public names (``rows`` and
# ``dropin``): old id -> id. ``OLD_IDS.get(kernel, kernel)`` reads either.
OLD_IDS = {
    "bn_train": "batch_norm_train",
    "bn_eval": "batch_norm_eval",
    "bn_backward": "batch_norm_backward",
    "softmax_xent": "softmax_cross_entropy",
    "bn-train-fwd": "batch_norm_train",
    "bn-eval-fwd": "batch_norm_eval",
    "bn-train-fwd-bwd": "batch_norm_backward",
    "xent-fwd-bwd": "softmax_cross_entropy",
}


@dataclasses.dataclass(frozen=True)
class Pass:
    """One membench pass: ``k`` arrays read, ``m`` written (``mode``) over ``n`` elements.

    ``mode`` is ``"read"``, ``"write"`` (fresh outputs: the faster of plain and non-temporal
    stores), ``"update"`` (in place) or ``"exp"`` (fresh outputs holding the exp of the input,
    a compute floor).
    """

    k: int
    m: int
    mode: str
    n: int
    dtype: str = "float32"

    @property
    def label(self) -> str:
        what = {"read": "", "write": f"w{self.m}", "update": f"u{self.m}", "exp": f"w{self.m} exp"}[
            self.mode
        ]
        dt = "" if self.dtype == "float32" else f" {self.dtype}"
        return f"r{self.k}{what}{dt}"

    @property
    def nbytes(self) -> int:
        per = self.k + (2 if self.mode == "update" else 1) * self.m
        return per * self.n * _itemsize(self.dtype)


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


@dataclasses.dataclass
class Impl:
    """One implementation of a case: a zero-argument callable, run with ``isa`` active."""

    fn: Callable[[], object]
    isa: str | None = None
    variant: str = ""


@dataclasses.dataclass(frozen=True)
class Case:
    """A kernel at one shape: bytes that must move, its speed-of-light passes, its builders.

    ``build()`` allocates the data and returns ``{implementation name: Impl}``; it is called
    once per case and the arrays are dropped when the case is done. ``dims`` are the sizes
    ``build()`` uses: the array's shape, or ``(total, tensors)`` for an optimizer.
    """

    kernel: str
    shape: str
    nbytes: int
    formula: str
    passes: tuple[Pass, ...]
    build: Callable[[], dict[str, Impl]]
    large: bool = False
    floor: tuple[Pass, ...] = ()  # compute floor (see bnfast.bench), if any
    dims: tuple[int, ...] = ()
    dtype: str = "float32"  # of the data (bfloat16 cases: their parameters and state float32)

    @property
    def pattern(self) -> str:
        return " + ".join(p.label for p in self.passes)


def torch_peers() -> Any:
    """:mod:`bnfast.torch.bench` (the PyTorch peers), or None without PyTorch."""
    try:
        from bnfast.torch import bench
    except ImportError:
        return None
    return bench


def _bnfast_impls(fn: Callable[[], object], variant: str = "") -> dict[str, Impl]:
    return {f"bnfast-{isa}": Impl(fn, isa, variant) for isa in bnfast.available_isas()}


def _data_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype of a case's data: float32, or ml_dtypes' bfloat16."""
    return bfloat16() if dtype == "bfloat16" else np.dtype(dtype)


def _label(shape: str, dtype: str) -> str:
    """A case's shape label; bfloat16 cases carry the dtype (rows are grouped by label)."""
    return shape if dtype == "float32" else f"{shape} {dtype}"


# Batch norm -------------------------------------------------------------------------------------


def _bn_one_pass(shape: tuple[int, ...], axis: int, itemsize: int = 4) -> bool:
    """Whether a channel's data fits in cache, so a second pass over it costs no memory traffic.

    With the channel axis not last (NCHW), one channel is N planes of H*W contiguous values; a
    kernel can take its statistics and normalize it while it is in cache. Otherwise (N, C) and
    channels-last interleave all channels: the whole array must fit.
    """
    axis %= len(shape)
    n = math.prod(shape)
    inner = math.prod(shape[axis + 1 :])
    per_channel = n // shape[axis] if inner > 1 else n
    return per_channel * itemsize <= CACHE_BYTES


def _batch_norm_case(
    kernel: str, label: str, shape: tuple[int, ...], axis: int, large: bool, dtype: str = "float32"
) -> Case:
    """A batch-norm kernel on ``dtype`` data; parameters and statistics are float32 (bfloat16
    data: PyTorch's mixed-type batch norm)."""
    n = math.prod(shape)
    e = _itemsize(dtype)
    one = _bn_one_pass(shape, axis, e)
    if kernel == "batch_norm_eval":
        passes, formula = (Pass(1, 1, "write", n, dtype),), f"2·{e}n: read x, write y"
    elif kernel == "batch_norm_train":
        if one:
            passes = (Pass(1, 1, "write", n, dtype),)
            formula = f"2·{e}n: read x, write y (one pass)"
        else:
            passes = (Pass(1, 0, "read", n, dtype), Pass(1, 1, "write", n, dtype))
            formula = f"3·{e}n: read x (stats); read x, write y"
    else:
        if one:
            passes = (Pass(2, 1, "write", n, dtype),)
            formula = f"3·{e}n: read dy, x, write dx (one pass)"
        else:
            passes = (Pass(2, 0, "read", n, dtype), Pass(2, 1, "write", n, dtype))
            formula = f"5·{e}n: read dy, x (sums); read dy, x, write dx"
    nbytes = sum(p.nbytes for p in passes)

    def build() -> dict[str, Impl]:
        rng = np.random.default_rng(0)
        dt = _data_dtype(dtype)
        x = rng.normal(1.0, 2.0, shape).astype(F32).astype(dt)
        c = shape[axis]
        w, b = rng.uniform(0.5, 1.5, c).astype(F32), rng.normal(0, 0.1, c).astype(F32)
        rm, rv = np.zeros(c, F32), np.ones(c, F32)
        out = aligned_empty(shape, dt)
        dy = None
        if kernel == "batch_norm_backward":
            dy = rng.normal(size=shape).astype(F32).astype(dt)
        res = bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis)
        mean, invstd = res.mean, res.invstd
        if kernel == "batch_norm_train":
            impls = _bnfast_impls(
                lambda: bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis, out=out)
            )
            numpy = lambda: R.batch_norm_train(x, rm, rv, w, b, axis=axis)  # noqa: E731
        elif kernel == "batch_norm_eval":
            impls = _bnfast_impls(
                lambda: bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=axis, out=out)
            )
            numpy = lambda: R.batch_norm_eval(x, rm, rv, w, b, axis=axis)  # noqa: E731
        else:
            impls = _bnfast_impls(
                lambda: bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, out=out)
            )
            numpy = lambda: R.batch_norm_backward(dy, x, mean, invstd, w, axis=axis)  # noqa: E731
        if dtype == "float32":  # NumPy has no bfloat16 arithmetic of its own
            impls["numpy"] = Impl(numpy)
        tb = torch_peers()
        if tb is not None:
            fn, variant = tb.batch_norm_peer(kernel, x, dy, axis, w, b, rm, rv, mean, invstd)
            impls["torch"] = Impl(fn, variant=variant)
        return impls

    return Case(
        kernel, _label(label, dtype), nbytes, formula, passes, build, large, dims=shape,
        dtype=dtype,
    )  # fmt: skip


# Softmax cross-entropy --------------------------------------------------------------------------


def _softmax_cross_entropy_case(
    rows: int, classes: int, large: bool, dtype: str = "float32"
) -> Case:
    n = rows * classes
    e = _itemsize(dtype)
    passes = (Pass(1, 1, "write", n, dtype), Pass(1, 0, "read", rows, "float64"))
    nbytes = 2 * e * n + 8 * rows
    formula = f"2·{e}·N·K + 8N: read logits, write grad, read int64 targets"

    def build() -> dict[str, Impl]:
        rng = np.random.default_rng(0)
        dt = _data_dtype(dtype)
        x = rng.standard_normal((rows, classes)).astype(F32).astype(dt)
        t = rng.integers(0, classes, rows)
        out = aligned_empty(x.shape, dt)
        impls = _bnfast_impls(lambda: bnfast.softmax_cross_entropy(x, t, out=out), "out=")
        if dtype == "float32":
            impls["numpy"] = Impl(lambda: R.softmax_cross_entropy(x, t))
        tb = torch_peers()
        if tb is not None:
            fn, variant = tb.softmax_cross_entropy_peer(x, t)
            impls["torch"] = Impl(fn, variant=variant)
        return impls

    floor = (Pass(1, 1, "exp", n),)  # the exps are float32 whatever the data's dtype
    label = _label(f"{rows}x{classes}", dtype)
    return Case(
        "softmax_cross_entropy", label, nbytes, formula, passes, build, large, floor,
        dims=(rows, classes), dtype=dtype,
    )  # fmt: skip


# Optimizers -------------------------------------------------------------------------------------

# case id: (arrays updated in place besides w, the optimizer's name in bnfast.optim.OPTIMIZERS
# (its class name is torch.optim's), its kwargs)
OPTIMIZER_CASES: dict[str, tuple[int, str, dict[str, Any]]] = {
    "sgd": (0, "sgd", {"lr": 0.01}),
    "sgd_momentum": (1, "sgd", {"lr": 0.01, "momentum": 0.9}),
    "rmsprop": (1, "rmsprop", {"lr": 0.01}),
    "adam": (2, "adam", {"lr": 1e-3}),
    "adamw": (2, "adamw", {"lr": 1e-3, "weight_decay": 1e-2}),
}


def _numpy_optimizer(name: str) -> Callable[[list, list, list], None]:
    """One step of the NumPy reference over every tensor (it returns new arrays: discarded)."""
    if name.startswith("sgd"):
        mom = OPTIMIZER_CASES[name][2].get("momentum", 0.0)
        return lambda ps, gs, ss: [
            R.sgd(p, g, s[0] if s else None, 0.01, momentum=mom) for p, g, s in zip(ps, gs, ss)
        ]
    if name == "rmsprop":
        return lambda ps, gs, ss: [
            R.rmsprop(p, g, s[0], None, None, 0.01) for p, g, s in zip(ps, gs, ss)
        ]
    dec = name == "adamw"
    wd = OPTIMIZER_CASES[name][2].get("weight_decay", 0.0)
    return lambda ps, gs, ss: [
        R.adam(p, g, s[0], s[1], None, 10, 1e-3, weight_decay=wd, decoupled=dec)
        for p, g, s in zip(ps, gs, ss)
    ]


def _optimizer_case(
    name: str,
    total: int,
    split: int,
    large: bool,
    dtype: str = "float32",
    state_dtype: str = "float32",
) -> Case:
    """An optimizer step over ``dtype`` parameters and gradients with ``state_dtype`` state
    (float32 by default, the NumPy API's default for bfloat16 parameters too). PyTorch keeps the
    state in the parameter's dtype, so it is the peer only of rows whose state dtype is the
    parameters' (bfloat16 rows with float32 state are work PyTorch has no variant of)."""
    state, key, kwargs = OPTIMIZER_CASES[name]
    cls = bnfast.optim.OPTIMIZERS[key]
    e, se = _itemsize(dtype), _itemsize(state_dtype)
    passes = (Pass(1, 1, "update", total, dtype),)
    if state and state_dtype != dtype:
        passes += (Pass(0, state, "update", total, state_dtype),)
    elif state:
        passes = (Pass(1, 1 + state, "update", total, dtype),)
    nbytes = sum(p.nbytes for p in passes)
    formula = f"3·{e}n: read g; read and write w" + (
        f"; read and write {state} {state_dtype} state array{'s' if state > 1 else ''} "
        f"({2 * se}n each)"
        if state
        else ""
    )
    shape = f"{total:.0e}".replace("+0", "").replace("+", "") + (f"/{split}" if split > 1 else "")
    label = _label(shape, dtype) + (" bf16-state" if state and state_dtype == "bfloat16" else "")
    state_kwargs = {"state_dtype": state_dtype} if dtype != "float32" else {}

    def build() -> dict[str, Impl]:
        rng = np.random.default_rng(0)
        dt = _data_dtype(dtype)
        per = total // split
        params = [rng.standard_normal(per, dtype=F32).astype(dt) for _ in range(split)]
        grads = [(1e-3 * rng.standard_normal(per, dtype=F32)).astype(dt) for _ in range(split)]
        opt = cls(params, grads=grads, **kwargs, **state_kwargs)
        opt.step()  # allocates the state outside the timing
        impls = _bnfast_impls(opt.step)
        if dtype == "float32":
            step = _numpy_optimizer(name)
            states = [[np.abs(g) for _ in range(state)] for g in grads]
            impls["numpy"] = Impl(lambda: step(params, grads, states))
        tb = torch_peers()
        if tb is not None and (state_dtype == dtype or not state):
            fn, variant = tb.optimizer_peer(cls.__name__, params, grads, kwargs)
            impls["torch"] = Impl(fn, variant=variant)
        return impls

    return Case(
        name, label, nbytes, formula, passes, build, large, dims=(total, split), dtype=dtype,
    )  # fmt: skip


# The reference shapes ---------------------------------------------------------------------------


def cases(quick: bool = False) -> list[Case]:
    """Every case of the bench: the reference shapes, or tiny ones with ``quick``."""
    if quick:
        bn = [("64x32", (64, 32), 1), ("nchw-4x8x6x6", (4, 8, 6, 6), 1)]
        bn += [("nhwc-2x5x5x8", (2, 5, 5, 8), -1)]
        xent = [(32, 10), (16, 100)]
        optim = [(1000, 1), (1000, 10)]
    else:
        bn = [("256x1024", (256, 1024), 1), ("8192x1024", (8192, 1024), 1)]
        bn += [("nchw-32x64x56x56", (32, 64, 56, 56), 1)]
        bn += [("nhwc-32x56x56x64", (32, 56, 56, 64), -1)]
        xent = [(256, 10), (4096, 1000), (65536, 10)]
        optim = [(100_000, 1), (10_000_000, 1), (10_000_000, 100)]
    out: list[Case] = []
    for dtype in DTYPES if _has_bfloat16() else DTYPES[:1]:
        for kernel in ("batch_norm_train", "batch_norm_eval", "batch_norm_backward"):
            for label, shape, axis in bn:
                large = math.prod(shape) >= 1 << 22
                out.append(_batch_norm_case(kernel, label, shape, axis, large, dtype))
        for rows, classes in xent:
            out.append(_softmax_cross_entropy_case(rows, classes, rows * classes >= 1 << 22, dtype))
        for name in OPTIMIZER_CASES:
            # bfloat16 parameters: float32 state (the NumPy API's default), then bfloat16 state
            # (PyTorch's, and bnfast.torch's default), the one PyTorch can be compared with.
            states = (
                ("float32", "bfloat16")
                if dtype == "bfloat16" and OPTIMIZER_CASES[name][0]
                else ("float32",)
            )
            for state_dtype in states:
                for total, split in optim:
                    large = total >= 1 << 22
                    out.append(_optimizer_case(name, total, split, large, dtype, state_dtype))
    return out


# The data dtypes of the cases: bfloat16 rows come after the float32 ones, at the same shapes
# (with ml_dtypes installed: the NumPy API's bfloat16 arrays).
DTYPES = ("float32", "bfloat16")


def _has_bfloat16() -> bool:
    try:
        bfloat16()
    except ImportError:
        return False
    return True
