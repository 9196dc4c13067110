"""The digits network as a tuning objective (caviar) and as a watched model (panda).

This module alone (with the ``bnfast tune`` CLI and the batch-norm experiment that use it)
needs scikit-learn's digits (:func:`bnfast.data.load_digits`); it imports the network, trainer
and data modules when a trial runs.

The network is :func:`bnfast.nn.mlp` with ``layers - 1`` hidden layers of ``hidden`` units
(with or without batch norm), seeded with the trial's seed, trained by :func:`bnfast.train.fit`
one epoch at a time with an optimizer of :data:`bnfast.optim.OPTIMIZERS` (``lr``, and ``beta1``
as the optimizer's first-moment coefficient: see :data:`BETA1`) on mini-batches of
``batch_size``, scored by validation accuracy after each epoch (the learning curve). The data
split is fixed (``data_seed``); the initialisation and shuffling come from the trial's seed.

The objective has a version, :data:`VERSION`, stored with every study that runs it: a study
run by another version (other networks, other numbers) is refused rather than mixed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from bnfast.tune.spaces import IntUniform, LogUniform, OneMinusLogUniform, Param, PowerOfTwo

__all__ = ["BETA1", "DEFAULTS", "VERSION", "DigitsModel", "build_model", "objective", "space"]

VERSION = "digits-2"
"""The objective's version, part of a study's identity (:class:`bnfast.tune.Study`'s
``objective_version``). ``digits-2``: the network of :func:`bnfast.nn.mlp` (hidden layers without
bias under batch norm, one generator for all layers) trained by :func:`bnfast.train.fit`.
Studies stored before versions were recorded used layers seeded one by one."""

#: Every parameter the objective takes, with its default.
DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "beta1": 0.9,
    "hidden": 64,
    "layers": 3,
    "batch_size": 64,
    "batch_norm": True,
    "optimizer": "adam",
}

#: How ``beta1`` reaches each optimizer it applies to: the hyperparameter it sets (Adam's is
#: the first of ``betas``). An optimizer of :data:`bnfast.optim.OPTIMIZERS` without an entry
#: (RMSprop: the course's form has only beta2) is refused.
BETA1: dict[str, str] = {"adam": "betas", "adamw": "betas", "momentum": "beta", "sgd": "momentum"}

#: Parameters that shape the network or pick the optimizer: fixed for a model's life.
STRUCTURAL = ("hidden", "layers", "batch_norm", "optimizer")


def space(full: bool = True) -> dict[str, Param]:
    """The CLI's search space: learning rate and beta on their log scales, and (``full``) the
    hidden units (50-100), layers (2-4) and mini-batch size (16-256)."""
    s: dict[str, Param] = {"lr": LogUniform(1e-4, 1.0), "beta1": OneMinusLogUniform(0.9, 0.999)}
    if full:
        s.update(
            hidden=IntUniform(50, 100), layers=IntUniform(2, 4), batch_size=PowerOfTwo(16, 256)
        )
    return s


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` over :data:`DEFAULTS`; an unknown name or optimizer is an error."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"the digits objective has no parameter {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(DEFAULTS)}"
        )
    p = {**DEFAULTS, **params}
    if p["optimizer"] not in BETA1:
        raise ValueError(
            f"the digits objective trains with {', '.join(map(repr, BETA1))} "
            f"(beta1 has no meaning for {p['optimizer']!r}), got optimizer={p['optimizer']!r}"
        )
    if int(p["layers"]) < 1:
        raise ValueError(f"layers must be >= 1 (the output layer), got {p['layers']}")
    return p


@functools.lru_cache(maxsize=4)
def _data(data_seed: int) -> Any:
    """The digits :class:`bnfast.data.Split`, loaded once per process."""
    from bnfast.data import load_digits

    return load_digits(seed=data_seed)


def _seed(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint32)[0])


def build_model(params: Mapping[str, Any], seed: int, n_in: int = 64, n_out: int = 10) -> Any:
    """The network for ``params`` (missing keys from :data:`DEFAULTS`), seeded with ``seed``."""
    from bnfast import nn

    p = _params(params)
    hidden = [int(p["hidden"])] * (int(p["layers"]) - 1)
    return nn.mlp(n_in, hidden, n_out, batch_norm=bool(p["batch_norm"]), seed=int(seed))


def _set_beta1(opt: Any, name: str, beta1: float) -> None:
    beta1 = float(beta1)
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
    if BETA1[name] == "betas":
        opt.betas = (beta1, opt.betas[1])
    else:
        setattr(opt, BETA1[name], beta1)


def _optimizer(model: Any, p: Mapping[str, Any]) -> Any:
    from bnfast.optim import OPTIMIZERS

    opt = OPTIMIZERS[p["optimizer"]](model.parameters(), lr=float(p["lr"]), grads=model.gradients())
    _set_beta1(opt, p["optimizer"], p["beta1"])
    return opt


class DigitsModel:
    """The digits network with its optimizer, trained one epoch per call (panda mode)."""

    def __init__(self, params: Mapping[str, Any], seed: int, data_seed: int = 0) -> None:
        self.seed, self.data_seed = int(seed), int(data_seed)
        p = _params(params)
        self.structure = {k: p[k] for k in STRUCTURAL}
        self.net = build_model(p, self.seed, n_in=_data(self.data_seed).X_train.shape[1])
        self.opt = _optimizer(self.net, p)

    def train_epoch(self, params: Mapping[str, Any], epoch: int) -> float:
        """One epoch with the current ``params``: ``lr``, ``beta1`` and ``batch_size`` may change
        between epochs; the network's shape and the optimizer may not."""
        from bnfast.train import fit

        p = _params(params)
        changed = [k for k in STRUCTURAL if p[k] != self.structure[k]]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} cannot change between epochs (they make the model); "
                "only lr, beta1 and batch_size can"
            )
        self.opt.lr = float(p["lr"])
        _set_beta1(self.opt, p["optimizer"], p["beta1"])
        d = _data(self.data_seed)
        history = fit(
            self.net, d.X_train, d.y_train, self.opt, epochs=1, batch_size=int(p["batch_size"]),
            validation=(d.X_val, d.y_val), seed=_seed(self.seed, epoch), progress=False,
        )  # fmt: skip
        return float(history.val_accuracy[-1])


def objective(
    params: Mapping[str, Any], report: Any, epochs: int = 10, data_seed: int = 0, **fixed: Any
) -> float:
    """Train the digits network for ``epochs`` epochs; reports and returns validation accuracy.

    ``fixed`` overrides parameters (``batch_norm=False`` for the plain network); an unknown
    name is a TypeError. Use ``functools.partial(objective, epochs=..., batch_norm=...)`` to
    make a picklable variant. Studies that run it pass ``objective_version=VERSION``.
    """
    p = {**params, **fixed}
    model = DigitsModel(p, report.seed, data_seed)
    acc = float("nan")
    for epoch in range(1, int(epochs) + 1):
        acc = model.train_epoch(p, epoch)
        report(epoch, acc)
    return acc
