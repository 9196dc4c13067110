"""The digits network as a tuning objective (caviar) and as a watched model (panda).

This module alone (with the ``bnfast tune`` CLI and the batch-norm experiment that use it)
needs the network layers, trainer and data of :mod:`bnfast.nn`, :mod:`bnfast.train`,
:mod:`bnfast.optim` and :mod:`bnfast.data`; it imports them when a trial runs.

The network: ``layers - 1`` hidden blocks ``Linear(hidden) [-> BatchNorm] -> ReLU`` and a
``Linear(10)`` output, trained with Adam (``lr``, ``beta1``; ``beta2 = 0.999``) or momentum
(``lr``, ``beta1`` as the momentum) on mini-batches of ``batch_size``, scored by validation
accuracy after each epoch (the learning curve). The data split is fixed (``data_seed``);
the initialisation and shuffling come from the trial's seed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bnfast.tune.spaces import IntUniform, LogUniform, OneMinusLogUniform, Param, PowerOfTwo

__all__ = ["DigitsModel", "build_model", "objective", "space"]

#: Defaults for parameters a space leaves out.
DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "beta1": 0.9,
    "hidden": 64,
    "layers": 3,
    "batch_size": 64,
    "batch_norm": True,
    "optimizer": "adam",
}


def space(full: bool = True) -> dict[str, Param]:
    """The CLI's search space: learning rate and beta on their log scales, and (``full``) the
    hidden units (50-100), layers (2-4) and mini-batch size (16-256)."""
    s: dict[str, Param] = {"lr": LogUniform(1e-4, 1.0), "beta1": OneMinusLogUniform(0.9, 0.999)}
    if full:
        s.update(
            hidden=IntUniform(50, 100), layers=IntUniform(2, 4), batch_size=PowerOfTwo(16, 256)
        )
    return s


def _call(fn: Callable, *args: Any, **optional: Any) -> Any:
    """Call ``fn`` passing only the keyword arguments its signature accepts."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn(*args, **optional)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return fn(*args, **optional)
    return fn(*args, **{k: v for k, v in optional.items() if k in sig.parameters})


@functools.lru_cache(maxsize=4)
def _data(data_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_val, y_val), loaded once per process."""
    from bnfast.data import load_digits

    d = load_digits(seed=data_seed)
    if isinstance(d, Mapping):
        d = _pick(d.__getitem__, d.__contains__)
    elif isinstance(d, tuple) and len(d) == 2 and all(len(p) == 2 for p in d):
        d = (*d[0], *d[1])
    elif not (isinstance(d, tuple) and len(d) == 4):
        d = _pick(lambda k: getattr(d, k), lambda k: hasattr(d, k))
    return tuple(d)  # type: ignore[return-value]


def _pick(get: Callable[[str], Any], has: Callable[[str], bool]) -> tuple:
    for names in (
        ("X_train", "y_train", "X_val", "y_val"),
        ("x_train", "y_train", "x_val", "y_val"),
        ("X_train", "y_train", "X_valid", "y_valid"),
        ("X_train", "y_train", "X_test", "y_test"),
    ):
        if all(has(n) for n in names):
            return tuple(get(n) for n in names)
    raise TypeError("load_digits() returned data in a layout bnfast.tune.digits does not know")


def _seed(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint32)[0])


def build_model(params: Mapping[str, Any], seed: int, n_in: int = 64, n_out: int = 10) -> Any:
    """The network for ``params`` (missing keys from :data:`DEFAULTS`)."""
    from bnfast import nn

    p = {**DEFAULTS, **params}
    layers: list[Any] = []
    width = n_in
    for i in range(int(p["layers"]) - 1):
        s = _seed(seed, i)
        layers.append(
            _call(nn.Linear, width, int(p["hidden"]), seed=s, rng=np.random.default_rng(s))
        )
        if p["batch_norm"]:
            layers.append(nn.BatchNorm(int(p["hidden"])))
        layers.append(nn.ReLU())
        width = int(p["hidden"])
    s = _seed(seed, 999)
    layers.append(_call(nn.Linear, width, n_out, seed=s, rng=np.random.default_rng(s)))
    return nn.Sequential(*layers)


def _optimizer(model: Any, p: Mapping[str, Any]) -> Any:
    from bnfast import optim

    if p["optimizer"] == "momentum":
        return _call(optim.Momentum, model.parameters(), lr=p["lr"], momentum=p["beta1"],
                     beta=p["beta1"], grads=model.gradients())  # fmt: skip
    return optim.Adam(
        model.parameters(), lr=p["lr"], betas=(p["beta1"], 0.999), grads=model.gradients()
    )


def _last_val_accuracy(history: Any) -> float:
    """The last epoch's validation accuracy from a fit() history, whatever its container."""
    for key in ("val_accuracy", "val_acc"):
        if isinstance(history, Mapping) and key in history:
            v = history[key]
            break
        if hasattr(history, key):
            v = getattr(history, key)
            break
    else:
        if isinstance(history, (list, tuple)) and history and isinstance(history[-1], Mapping):
            return _last_val_accuracy(history[-1])
        raise TypeError("fit() history has no val_accuracy")
    if isinstance(v, (list, tuple, np.ndarray)):
        v = v[-1]
    return float(v)


class DigitsModel:
    """The digits network with its optimizer, trained one epoch per call (panda mode)."""

    def __init__(self, params: Mapping[str, Any], seed: int, data_seed: int = 0) -> None:
        self.seed, self.data_seed = int(seed), int(data_seed)
        p = {**DEFAULTS, **params}
        x_train = _data(self.data_seed)[0]
        self.net = build_model(p, self.seed, n_in=int(np.asarray(x_train).shape[1]))
        self.opt = _optimizer(self.net, p)
        self.optimizer = p["optimizer"]

    def train_epoch(self, params: Mapping[str, Any], epoch: int) -> float:
        """One epoch with the current ``params`` (lr and beta1 may change between epochs)."""
        from bnfast.train import fit

        p = {**DEFAULTS, **params}
        if hasattr(self.opt, "lr"):
            self.opt.lr = float(p["lr"])
        if hasattr(self.opt, "betas"):
            self.opt.betas = (float(p["beta1"]), self.opt.betas[1])
        elif hasattr(self.opt, "momentum") and self.optimizer == "momentum":
            self.opt.momentum = float(p["beta1"])
        x, y, xv, yv = _data(self.data_seed)
        history = _call(fit, self.net, x, y, self.opt, epochs=1, batch_size=int(p["batch_size"]),
                        validation=(xv, yv), seed=_seed(self.seed, epoch))  # fmt: skip
        return _last_val_accuracy(history)


def objective(
    params: Mapping[str, Any], report: Any, epochs: int = 10, data_seed: int = 0, **fixed: Any
) -> float:
    """Train the digits network for ``epochs`` epochs; reports and returns validation accuracy.

    ``fixed`` overrides parameters (``batch_norm=False`` for the plain network). Use
    ``functools.partial(objective, epochs=..., batch_norm=...)`` to make a picklable variant.
    """
    model = DigitsModel({**params, **fixed}, report.seed, data_seed)
    p = {**params, **fixed}
    acc = float("nan")
    for epoch in range(1, int(epochs) + 1):
        acc = model.train_epoch(p, epoch)
        report(epoch, acc)
    return acc
