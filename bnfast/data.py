"""Datasets and mini-batches.

:func:`load_digits` gives the 8x8 handwritten digits that scikit-learn ships (no download;
``pip install "bnfast[demo]"``), split and standardised. :func:`load_npz` reads a user's
``(X, y)`` file with the checks the ``bnfast train`` command reports. :func:`minibatches` is the
iterator the trainer uses.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DataError",
    "Split",
    "load_digits",
    "load_npz",
    "minibatches",
    "split_standardize",
]


class DataError(ValueError):
    """A data set that cannot be used: missing keys, wrong shapes or dtypes, bad labels."""


class Split(NamedTuple):
    """Train, validation and test arrays (features float, labels int64), plus the
    per-feature ``mean`` and ``std`` of the training set used to standardise all three."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(initial=-1), self.y_val.max(initial=-1),
                       self.y_test.max(initial=-1))) + 1  # fmt: skip


def split_standardize(
    X: np.ndarray,
    y: np.ndarray,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    dtype: Any = np.float32,
) -> Split:
    """Shuffle with ``seed``, split into train / validation / test, standardise.

    Each feature is shifted and scaled by the training set's mean and standard deviation (a
    constant feature, like the always-blank corner pixels of the digits, is only shifted), so
    no information from the validation or test sets leaks into training.
    """
    n = len(X)
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 2:
        raise DataError(f"{n} samples leave fewer than 2 for training")
    order = np.random.default_rng(seed).permutation(n)
    tr, va, te = np.split(order, [n - n_val - n_test, n - n_test])
    X = np.asarray(X, dtype=np.float64).reshape(n, -1)
    mean = X[tr].mean(axis=0)
    std = X[tr].std(axis=0)
    std[std == 0] = 1.0
    if not standardize:
        mean, std = np.zeros_like(mean), np.ones_like(std)

    def prep(idx: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((X[idx] - mean) / std, dtype=dtype)

    y = np.asarray(y, dtype=np.int64)
    return Split(prep(tr), y[tr], prep(va), y[va], prep(te), y[te], mean, std)


def load_digits(
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    dtype: Any = np.float32,
) -> Split:
    """The 1,797 8x8 handwritten digits bundled with scikit-learn (10 classes, 64 features).

    Split with ``seed`` into train / validation / test (default 60/20/20 %) and standardised
    with the training set's statistics (see :func:`split_standardize`).

    Raises
    ------
    ImportError
        If scikit-learn is not installed (``pip install "bnfast[demo]"``).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError('load_digits needs scikit-learn: pip install "bnfast[demo]"') from None
    d = sk_load_digits()
    return split_standardize(d.data, d.target, val_fraction, test_fraction, seed, standardize,
                             dtype)  # fmt: skip


def load_npz(
    path: str | os.PathLike[str], num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read features ``X`` and integer labels ``y`` from a ``.npz`` file and check them.

    ``X`` must be numeric with at least 2 dimensions (rows are samples; images are flattened)
    and finite; ``y`` integer labels of shape ``(N,)`` in ``[0, num_classes)`` (default:
    ``max(y) + 1``). Float labels with integer values are accepted.

    Raises
    ------
    FileNotFoundError
        No such file.
    DataError
        Not a readable ``.npz`` or the checks above fail; the message says which.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc})") from None
    if not hasattr(f, "files"):  # a lone .npy array
        raise DataError(f"{path}: not an .npz archive (one array found; need X and y)")
    with f:
        missing = [k for k in ("X", "y") if k not in f.files]
        if missing:
            found = ", ".join(f.files) or "none"
            raise DataError(f"{path}: missing key(s) {', '.join(missing)}; found {found}")
        try:
            X, y = f["X"], f["y"]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{path}: cannot read X and y ({exc})") from None
    if X.dtype.kind not in "biuf":
        raise DataError(f"X must be numeric, got dtype {X.dtype}")
    if X.ndim < 2:
        raise DataError(f"X must have shape (N, features...), got {X.shape}")
    if y.ndim != 1:
        raise DataError(f"y must have shape (N,), got {y.shape}")
    if len(y) != len(X):
        raise DataError(f"X has {len(X)} samples but y has {len(y)}")
    if len(X) < 2 or X[0].size == 0:
        raise DataError(f"X must hold at least 2 samples of at least 1 feature, got {X.shape}")
    if not np.isfinite(X).all():
        raise DataError("X contains NaN or infinite values")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError("y must hold integer class labels, got non-integer values")
    elif y.dtype.kind not in "biu":
        raise DataError(f"y must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if (y < 0).any():
        i = int(np.argmax(y < 0))
        raise DataError(f"label out of range: y[{i}] = {y[i]} < 0")
    if num_classes is not None:
        if num_classes < 2:
            raise DataError(f"num_classes must be >= 2, got {num_classes}")
        if (y >= num_classes).any():
            i = int(np.argmax(y >= num_classes))
            raise DataError(f"label out of range: y[{i}] = {y[i]} >= num_classes = {num_classes}")
    elif y.max() < 1:
        raise DataError("y holds a single class; need at least 2")
    return X.reshape(len(X), -1), y


def minibatches(
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool = True,
    seed: int | np.random.Generator | None = 0,
    drop_last: bool = False,
    reuse: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(X_batch, y_batch)`` pairs covering the data once (one epoch).

    Parameters
    ----------
    X, y : ndarray
        Samples along the first axis.
    batch_size : int
    shuffle : bool
        Visit the samples in an order drawn from ``seed`` (the trainer passes ``(seed,
        epoch)``, so each epoch has its own order and a resumed run repeats it).
    seed : int, tuple of ints, Generator or None
    drop_last : bool
        Drop the last batch when it is smaller than ``batch_size``. When kept (default) and it
        would hold a single sample, that sample joins the batch before it instead (which then
        has ``batch_size + 1`` rows): batch norm in training needs two samples per channel, and
        a batch of one would also make its statistics meaningless. So every sample is used
        every epoch and no batch of one reaches the network; only a data set of exactly one
        sample yields a batch of one (which a batch-norm layer refuses with ValueError).

    reuse : bool
        Gather shuffled batches into two arrays kept by the iterator (valid until the next
        batch) instead of fresh ones: what the trainer uses, so a step allocates nothing
        large. Unshuffled batches are views of ``X`` and ``y`` either way.
    """
    n = len(X)
    if len(y) != n:
        raise ValueError(f"X has {n} samples but y has {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = list(range(0, n, batch_size))
    if drop_last and n % batch_size:
        starts.pop()
    bounds = [(s, min(s + batch_size, n)) for s in starts]
    if not drop_last and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    if shuffle:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        order = rng.permutation(n)
        if not reuse:
            for a, b in bounds:
                yield X[order[a:b]], y[order[a:b]]
            return
        width = max((b - a for a, b in bounds), default=0)
        xbuf = np.empty((width, *X.shape[1:]), X.dtype)
        ybuf = np.empty((width, *y.shape[1:]), y.dtype)
        for a, b in bounds:
            xb, yb = xbuf[: b - a], ybuf[: b - a]
            np.take(X, order[a:b], axis=0, out=xb)
            np.take(y, order[a:b], axis=0, out=yb)
            yield xb, yb
    else:
        for a, b in bounds:
            yield X[a:b], y[a:b]
