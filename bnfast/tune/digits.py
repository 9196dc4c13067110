"""The digits network as a tuning objective (caviar) and as a watched model (panda).

This module alone (with the ``bnfast tune`` CLI and the batch-norm experiment that use it)
needs scikit-learn's digits (:func:`bnfast.data.load_digits`); it imports the network, trainer
and data modules when a trial runs.

The network is :func:`bnfast.nn.mlp` with ``layers - 1`` hidden layers of ``hidden`` units
(with or without batch norm), seeded with the trial's seed, trained by :func:`bnfast.train.fit`
one epoch at a time with an optimizer of :data:`bnfast.optim.OPTIMIZERS` on mini-batches of
``batch_size``, scored by validation accuracy after each epoch (the learning curve). The
optimizer's hyperparameters are the course's: ``lr`` with inverse-time decay
(``lr / (1 + decay * (epoch - 1))`` in epoch ``epoch``, 1-based), the momentum ``beta`` (the
momentum optimizer's, SGD's ``momentum``), Adam's ``beta1``, ``beta2`` and ``eps`` (see
:data:`OPTIMIZER_PARAMS`). The data
split is fixed (``data_seed``); the initialisation and shuffling come from the trial's seed.

The objective has a version, :data:`VERSION`, stored with every study that runs it: a study
run by another version (other networks, other numbers) is refused rather than mixed. Its
settings (:func:`settings`: epochs, data seed, the ISA, fixed parameters) are part of the
study's identity too: the same parameters give other scores on another ISA (the kernels round
differently), so a trial runs on the ISA named in its settings, whatever the worker's default.
Trials are quiet (no progress bar): the search's driver draws one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from bnfast.tune.spaces import IntUniform, LogUniform, OneMinusLogUniform, Param, PowerOfTwo

__all__ = [
    "DEFAULTS",
    "METRIC",
    "OPTIMIZER_PARAMS",
    "VERSION",
    "DigitsModel",
    "build_model",
    "course_space",
    "objective",
    "settings",
    "space",
]

VERSION = "digits-3"
"""The objective's version, part of a study's identity (:class:`bnfast.tune.Study`'s
``objective_version``). ``digits-3``: the momentum optimizers take ``beta`` (``beta1`` is Adam's
only), with ``beta2``, ``eps`` and ``decay``; Adam's scores are those of ``digits-2`` (the
network of :func:`bnfast.nn.mlp`, hidden layers without bias under batch norm, one generator
for all layers, trained by :func:`bnfast.train.fit`). Studies stored before versions were
recorded used layers seeded one by one."""

#: The score's name (tables and plot axes).
METRIC = "validation accuracy"

#: Every parameter the objective takes, with its default.
DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "decay": 0.0,
    "beta": 0.9,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "hidden": 64,
    "layers": 3,
    "batch_size": 64,
    "batch_norm": True,
    "optimizer": "adam",
}

#: The optimizer-specific parameters each optimizer takes (``beta``: Momentum's ``beta``,
#: SGD's ``momentum``; ``beta1``, ``beta2``: Adam's ``betas``). Another optimizer's parameter
#: set away from its default is an error; an optimizer without an entry (RMSprop) is refused.
OPTIMIZER_PARAMS: dict[str, tuple[str, ...]] = {
    "adam": ("beta1", "beta2", "eps"),
    "adamw": ("beta1", "beta2", "eps"),
    "momentum": ("beta",),
    "sgd": ("beta",),
}

#: Parameters that shape the network or pick the optimizer: fixed for a model's life.
STRUCTURAL = ("hidden", "layers", "batch_norm", "optimizer")


def space(full: bool = True) -> dict[str, Param]:
    """The CLI's search space: learning rate and Adam's beta1 on their log scales, and
    (``full``) the hidden units (50-100), layers (2-4) and mini-batch size (16-256)."""
    s: dict[str, Param] = {"lr": LogUniform(1e-4, 1.0), "beta1": OneMinusLogUniform(0.9, 0.999)}
    if full:
        s.update(
            hidden=IntUniform(50, 100), layers=IntUniform(2, 4), batch_size=PowerOfTwo(16, 256)
        )
    return s


def course_space(optimizer: str = "adam") -> dict[str, Param]:
    """The course's whole space for ``optimizer``: learning rate, its inverse-time decay rate,
    the momentum ``beta`` (momentum, sgd) or Adam's ``beta1``, ``beta2``, ``eps``, the hidden
    units, layers and mini-batch size. Pass ``optimizer`` to the objective as a setting."""
    s: dict[str, Param] = {"lr": LogUniform(1e-4, 1.0), "decay": LogUniform(1e-3, 1.0)}
    if optimizer in ("momentum", "sgd"):
        s["beta"] = OneMinusLogUniform(0.8, 0.999)
    else:
        s.update(
            beta1=OneMinusLogUniform(0.8, 0.99),
            beta2=OneMinusLogUniform(0.99, 0.9999),
            eps=LogUniform(1e-10, 1e-6),
        )
    s.update(hidden=IntUniform(50, 100), layers=IntUniform(2, 4), batch_size=PowerOfTwo(16, 256))
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
    if p["optimizer"] not in OPTIMIZER_PARAMS:
        raise ValueError(
            f"the digits objective trains with {', '.join(map(repr, OPTIMIZER_PARAMS))} "
            f"(the course's momentum and Adam forms), got optimizer={p['optimizer']!r}"
        )
    own = OPTIMIZER_PARAMS[p["optimizer"]]
    for name in sorted({"beta", "beta1", "beta2", "eps"} - set(own)):
        if name in params and params[name] != DEFAULTS[name]:
            raise ValueError(
                f"{name}={params[name]!r} has no meaning for optimizer={p['optimizer']!r}, "
                f"which takes {', '.join(own)}"
            )
    if float(p["decay"]) < 0:
        raise ValueError(f"decay must be >= 0, got {p['decay']}")
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


def _set_hyper(opt: Any, p: Mapping[str, Any]) -> None:
    """The optimizer's own hyperparameters from ``p`` (see :data:`OPTIMIZER_PARAMS`)."""
    for name in OPTIMIZER_PARAMS[p["optimizer"]]:
        if name != "eps" and not 0.0 <= float(p[name]) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {p[name]}")
    if p["optimizer"] in ("adam", "adamw"):
        opt.betas = (float(p["beta1"]), float(p["beta2"]))
        opt.eps = float(p["eps"])
    else:
        setattr(opt, "beta" if p["optimizer"] == "momentum" else "momentum", float(p["beta"]))


def _optimizer(model: Any, p: Mapping[str, Any]) -> Any:
    from bnfast.optim import OPTIMIZERS

    opt = OPTIMIZERS[p["optimizer"]](model.parameters(), lr=float(p["lr"]), grads=model.gradients())
    _set_hyper(opt, p)
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
        """Epoch ``epoch`` (1-based) with the current ``params``: the learning rate, its decay,
        the optimizer's hyperparameters and ``batch_size`` may change between epochs; the
        network's shape and the optimizer may not."""
        from bnfast.train import fit

        p = _params(params)
        changed = [k for k in STRUCTURAL if p[k] != self.structure[k]]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} cannot change between epochs (they make the model); "
                "only lr, decay, the optimizer's hyperparameters and batch_size can"
            )
        self.opt.lr = float(p["lr"]) / (1.0 + float(p["decay"]) * (int(epoch) - 1))
        _set_hyper(self.opt, p)
        d = _data(self.data_seed)
        history = fit(
            self.net, d.X_train, d.y_train, self.opt, epochs=1, batch_size=int(p["batch_size"]),
            validation=(d.X_val, d.y_val), seed=_seed(self.seed, epoch), progress=False,
        )  # fmt: skip
        return float(history.val_accuracy[-1])


def settings(
    epochs: int = 10, data_seed: int = 0, isa: str | None = None, **fixed: Any
) -> dict[str, Any]:
    """The objective's settings as a study's identity (``Study(settings=...)``): ``epochs``,
    ``data_seed``, the ISA (None: the active one, :func:`bnfast.active_isa`) and ``fixed``.

    Pass the same values to :func:`objective` (``functools.partial(objective, **settings)``),
    so that every worker trains on that ISA."""
    import bnfast

    _params(fixed)
    return {"epochs": int(epochs), "data_seed": int(data_seed),
            "isa": isa or bnfast.active_isa(), **fixed}  # fmt: skip


def objective(
    params: Mapping[str, Any],
    report: Any,
    epochs: int = 10,
    data_seed: int = 0,
    isa: str | None = None,
    **fixed: Any,
) -> float:
    """Train the digits network for ``epochs`` epochs; reports and returns validation accuracy.

    ``isa`` runs the kernels on that instruction set (None: the worker's active one).
    ``fixed`` overrides parameters (``batch_norm=False`` for the plain network); an unknown
    name is a TypeError. Use ``functools.partial(objective, **settings(...))`` to make a
    picklable variant; studies that run it pass ``objective_version=VERSION`` and the same
    ``settings``.
    """
    import contextlib

    import bnfast

    p = {**params, **fixed}
    with bnfast.use_isa(isa) if isa else contextlib.nullcontext():
        model = DigitsModel(p, report.seed, data_seed)
        acc = float("nan")
        for epoch in range(1, int(epochs) + 1):
            acc = model.train_epoch(p, epoch)
            report(epoch, acc)
    return acc
