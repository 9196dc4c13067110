"""A small trainer: :func:`fit`, :func:`evaluate`, :func:`predict` and checkpoints.

One training step is ``zero_grad``, the forward pass, the loss and its gradient (one fused
kernel), the backward pass and one fused optimizer call::

    model.zero_grad(); logits = model.forward(xb); loss.forward(logits, yb)
    model.backward(loss.backward()); optimizer.step(model.gradients())

Progress: a tqdm bar with the running loss and accuracy when tqdm is importable (it is in the
``demo`` extra, never required), else one printed line per epoch; ``progress=False`` is silent.

Backends: :func:`make_optimizer` gives an optimizer by name on the ``"native"`` kernels
(:mod:`bnfast.optim`) or on the NumPy reference (:class:`ReferenceAdam`), and the default loss
follows the model's ``backend``, so one network trains on either (see :mod:`bnfast.backend`).

Checkpoints: one ``.npz`` holding the model's state dict, the optimizer's (and the schedule's)
state, the epoch reached and the history. ``fit(..., checkpoint=path)`` writes it after every
epoch (atomically: a run killed while writing keeps the previous one); ``resume=True`` restores
it and continues from the next epoch. Because each epoch's shuffle is drawn from ``(seed,
epoch)`` and dropout masks from their call count, a resumed run ends with the same weights, bit
for bit, as one that was never interrupted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnfast import optim
from bnfast.backend import check_backend
from bnfast.data import minibatches
from bnfast.nn.losses import SoftmaxCrossEntropy
from bnfast.nn.module import Module
from bnfast.optim.numpy_backend import ReferenceAdam

__all__ = [
    "History",
    "ReferenceAdam",
    "evaluate",
    "fit",
    "load_checkpoint",
    "make_optimizer",
    "predict",
    "save_checkpoint",
]

_FORMAT = "bnfast-checkpoint-1"


@dataclass
class History:
    """Per-epoch learning curves (lists of equal length, one entry per completed epoch).

    ``loss`` / ``accuracy`` are averaged over the epoch's training batches (in training
    mode, as the bar shows them); ``val_loss`` / ``val_accuracy`` are measured in evaluation
    mode after the epoch (NaN without validation data). ``lr`` is the rate the epoch used and
    ``time`` its wall-clock seconds (training only).
    """

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, list[Any]]) -> History:
        return cls(**{k: list(d.get(k, [])) for k in cls.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.epoch)


def _loss_for(model: Module, loss: Any) -> Any:
    if loss is not None:
        return loss
    return SoftmaxCrossEntropy().set_backend(getattr(model, "backend", "native"))


def _check_xy(X: Any, y: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"{name}: X has shape {X.shape} and y {y.shape}; need (N, ...) and (N,)")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name}: labels must be integers, got {y.dtype}")
    return X, y


def _run_batches(
    model: Module, loss_obj: Any, X: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, float]:
    total_loss = 0.0
    correct = 0
    for xb, yb in minibatches(X, y, batch_size, shuffle=False):
        logits = model.forward(xb)
        total_loss += float(loss_obj.forward(logits, yb)) * len(yb)
        correct += int(np.count_nonzero(np.argmax(logits, axis=1) == yb))
    return total_loss / len(y), correct / len(y)


def evaluate(
    model: Module, X: Any, y: Any, loss: Any = None, batch_size: int = 1024
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` in evaluation mode (batch norm uses its running
    statistics, dropout is off); the model's mode is restored afterwards."""
    X, y = _check_xy(X, y, "evaluate")
    if len(y) == 0:
        raise ValueError("evaluate: no samples")
    was_training = model.training
    model.eval()
    try:
        return _run_batches(model, _loss_for(model, loss), X, y, batch_size)
    finally:
        model.train(was_training)


def predict(
    model: Module, X: Any, batch_size: int = 1024, return_logits: bool = False
) -> np.ndarray:
    """Class predictions (or the logits) for ``X`` in evaluation mode."""
    X = np.asarray(X)
    was_training = model.training
    model.eval()
    try:
        parts = [
            np.array(model.forward(X[a : a + batch_size])) for a in range(0, len(X), batch_size)
        ]
    finally:
        model.train(was_training)
    logits = np.concatenate(parts) if parts else np.empty((0, 0))
    return logits if return_logits else np.argmax(logits, axis=1)


# --- optimizers on either backend -----------------------------------------------------------


def make_optimizer(
    name: str,
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray] | None = None,
    backend: str = "native",
    **hyper: Any,
) -> Any:
    """An optimizer by its name in :data:`bnfast.optim.OPTIMIZERS` (``"adam"``, ``"sgd"``, ...).

    ``backend="native"`` gives the :mod:`bnfast.optim` class; ``"numpy"`` gives the reference
    twin, which exists for Adam only (NotImplementedError for the others).
    """
    key = name.lower()
    if key not in optim.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(optim.OPTIMIZERS)}")
    if check_backend(backend) == "native":
        return optim.OPTIMIZERS[key](params, grads=grads, **hyper)
    if key != "adam":
        raise NotImplementedError(f"backend='numpy' has no {name!r} optimizer (only 'adam')")
    return ReferenceAdam(params, grads=grads, **hyper)


# --- checkpoints -----------------------------------------------------------------------------


def _flatten(obj: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    """JSON skeleton of ``obj`` with every array moved into ``arrays`` (by key)."""
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}:{prefix}"
        arrays[key] = np.array(obj)  # a snapshot, not a view that training keeps changing
        return {"__array__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"{prefix}: state dict keys must be str")
        return {"__dict__": {k: _flatten(v, arrays, f"{prefix}.{k}") for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, arrays, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, np.generic):
        return _flatten(np.asarray(obj), arrays, prefix)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{prefix}: cannot checkpoint a {type(obj).__name__}")


def _unflatten(skel: Any, arrays: Any) -> Any:
    if isinstance(skel, list):
        return [_unflatten(v, arrays) for v in skel]
    if isinstance(skel, dict):
        if "__array__" in skel:
            return arrays[skel["__array__"]]
        if "__tuple__" in skel:
            return tuple(_unflatten(v, arrays) for v in skel["__tuple__"])
        return {k: _unflatten(v, arrays) for k, v in skel["__dict__"].items()}
    return skel


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Module,
    optimizer: Any = None,
    schedule: Any = None,
    epoch: int = 0,
    history: History | None = None,
    **extra: Any,
) -> None:
    """Write the model's and optimizer's state (and the schedule's, the epoch count, the
    history and any JSON-able ``extra``) to one ``.npz`` at ``path``, atomically."""
    state = {
        "format": _FORMAT,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "schedule": _schedule_state(schedule),
        "epoch": int(epoch),
        "history": (history or History()).as_dict(),
        "extra": extra,
    }
    arrays: dict[str, np.ndarray] = {}
    skel = _flatten(state, arrays, "")
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        np.savez(tmp, __skeleton__=np.array(json.dumps(skel)), **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(
    path: str | os.PathLike[str], model: Module, optimizer: Any = None, schedule: Any = None
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into ``model`` (and ``optimizer``,
    ``schedule``); return ``{"epoch", "history", "extra"}``.

    Raises
    ------
    ValueError
        The file is not a bnfast checkpoint or does not match the model (KeyError for
        missing or unexpected parameters, from the model's ``load_state_dict``).
    """
    with np.load(os.fspath(path), allow_pickle=False) as f:
        if "__skeleton__" not in f.files:
            raise ValueError(f"{os.fspath(path)}: not a bnfast checkpoint")
        skel = json.loads(str(f["__skeleton__"]))
        state = _unflatten(skel, {k: f[k] for k in f.files if k != "__skeleton__"})
    if state.get("format") != _FORMAT:
        raise ValueError(f"{os.fspath(path)}: unknown checkpoint format {state.get('format')!r}")
    model.load_state_dict(state["model"])
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"{os.fspath(path)}: holds no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    if schedule is not None and state["schedule"] is not None:
        schedule.load_state_dict(state["schedule"])
    return {
        "epoch": int(state["epoch"]),
        "history": History.from_dict(state["history"]),
        "extra": state["extra"],
    }


def _schedule_state(schedule: Any) -> Any:
    if schedule is None:
        return None
    if not hasattr(schedule, "state_dict"):
        raise TypeError("a schedule used with checkpoints needs state_dict/load_state_dict")
    return schedule.state_dict()


# --- training --------------------------------------------------------------------------------


class _Progress:
    """One tqdm bar over the whole run if tqdm is importable, else a line per epoch; or
    nothing."""

    def __init__(self, enabled: bool, epochs: int, n_batches: int, start: int) -> None:
        self.enabled = enabled
        self.epochs = epochs
        self.bar: Any = None
        self.last = ""
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(
                total=epochs * n_batches, initial=start * n_batches, unit="batch",
                desc="training", dynamic_ncols=True,
            )  # fmt: skip

    def update(self, epoch: int, loss: float, acc: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"epoch {epoch}/{self.epochs} loss {loss:.4f} acc {acc:.3f}{self.last}",
                refresh=False,
            )
            self.bar.update(1)

    def end_epoch(self, history: History) -> None:
        val = ""
        if not np.isnan(history.val_loss[-1]):
            val = f" val_loss {history.val_loss[-1]:.4f} val_acc {history.val_accuracy[-1]:.3f}"
        if self.bar is not None:
            self.last = val
        elif self.enabled:
            print(
                f"epoch {history.epoch[-1]}/{self.epochs}: loss {history.loss[-1]:.4f} "
                f"acc {history.accuracy[-1]:.4f}{val} ({history.time[-1] * 1e3:.0f} ms)"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(
    model: Module,
    X: Any,
    y: Any,
    optimizer: Any,
    schedule: Any = None,
    epochs: int = 10,
    batch_size: int = 64,
    validation: tuple[Any, Any] | None = None,
    loss: Any = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> History:
    """Train ``model`` on ``(X, y)`` for ``epochs`` epochs of mini-batches.

    Parameters
    ----------
    model : Module
        E.g. a :class:`bnfast.nn.Sequential`; it is put in training mode.
    X, y : array_like
        Samples (float, the model's dtype) and integer class labels.
    optimizer
        An optimizer over ``model.parameters()`` (:mod:`bnfast.optim`, or
        :func:`make_optimizer`); ``optimizer.step(model.gradients())`` is
        called once per batch.
    schedule : optional
        A learning-rate schedule (:mod:`bnfast.optim.schedules`) stepped once per epoch.
    epochs : int
        The total number of epochs (a resumed run counts the restored ones).
    batch_size : int
    validation : (X_val, y_val), optional
        Evaluated after every epoch.
    loss : optional
        A loss object with ``forward(logits, target)`` and ``backward()``; default softmax
        cross-entropy on the model's backend.
    shuffle, seed, drop_last
        Epoch ``e`` visits the samples in the order drawn from ``(seed, e)``; see
        :func:`bnfast.data.minibatches` for the last batch (a batch of one is never formed
        unless the data set has one sample).
    checkpoint : path, optional
        Written after every epoch.
    resume : bool
        Start from ``checkpoint`` if it exists (the model, optimizer, schedule, epoch count
        and history it holds); without the file, start afresh.
    progress : bool
        Show progress (see the module docstring).

    Returns
    -------
    History
        The learning curves, restored epochs included.
    """
    X, y = _check_xy(X, y, "fit")
    if len(y) == 0:
        raise ValueError("fit: no training samples")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if validation is not None:
        validation = _check_xy(*validation, "validation")
    loss_obj = _loss_for(model, loss)
    history = History()
    start = 0
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        if os.path.exists(checkpoint):
            info = load_checkpoint(checkpoint, model, optimizer, schedule)
            start, history = info["epoch"], info["history"]
    n_batches = len(_batch_bounds(len(y), batch_size, drop_last))
    if n_batches == 0:
        raise ValueError(f"fit: {len(y)} samples make no full batch of {batch_size} (drop_last)")
    bar = _Progress(progress, epochs, n_batches, min(start, epochs))
    try:
        for epoch in range(start, epochs):
            model.train()
            lr = float(getattr(optimizer, "lr", float("nan")))
            t0 = time.perf_counter()
            total_loss, correct, seen = 0.0, 0, 0
            batches = minibatches(
                X,
                y,
                batch_size,
                shuffle=shuffle,
                seed=(seed, epoch),
                drop_last=drop_last,
                reuse=True,
            )
            for xb, yb in batches:
                model.zero_grad()
                logits = model.forward(xb)
                batch_loss = float(loss_obj.forward(logits, yb))
                n = len(yb)
                # Accuracy before the update, from the logits the loss saw.
                correct += int(np.count_nonzero(np.argmax(logits, axis=1) == yb))
                model.backward(loss_obj.backward())
                optimizer.step(model.gradients())
                total_loss += batch_loss * n
                seen += n
                bar.update(epoch + 1, total_loss / seen, correct / seen)
            elapsed = time.perf_counter() - t0
            if schedule is not None:
                schedule.step()
            if validation is not None:
                vl, va = evaluate(model, *validation, loss_obj)
            else:
                vl = va = float("nan")
            history.epoch.append(epoch + 1)
            history.loss.append(total_loss / max(seen, 1))
            history.accuracy.append(correct / max(seen, 1))
            history.val_loss.append(vl)
            history.val_accuracy.append(va)
            history.lr.append(lr)
            history.time.append(elapsed)
            bar.end_epoch(history)
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, schedule, epoch + 1, history)
    finally:
        bar.close()
    model.train()
    return history


def _batch_bounds(n: int, batch_size: int, drop_last: bool) -> range:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    full, rest = divmod(n, batch_size)
    if drop_last or rest == 0:
        return range(full)
    return range(full if (rest == 1 and full > 0) else full + 1)


def plot_history(history: History, path: str | os.PathLike[str], title: str = "") -> str:
    """Write the learning curves (loss and accuracy, training and validation, per epoch) to a
    PNG at ``path`` and return the path. Needs matplotlib (ImportError otherwise); uses its
    object API, so no global backend or pyplot state is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(history.epoch, getattr(history, key), label="training")
        val = getattr(history, f"val_{key}")
        if not np.all(np.isnan(val)):
            ax.plot(history.epoch, val, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")
    if title:
        fig.suptitle(title)
    path = os.fspath(path)
    fig.savefig(path, dpi=100)
    return path
