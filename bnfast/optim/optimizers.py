"""Optimizers over lists (or dicts) of arrays, updated in place by one fused kernel call per step.

An optimizer holds the parameter arrays (float32, float64 or bfloat16, C-contiguous, writable;
the dtypes may be mixed), optionally the matching gradient arrays, and its state arrays (one per
parameter per kind of state). ``step()`` runs one call into ``_core`` that updates every parameter and its
state in one sweep; a refused call (wrong shapes, dtypes, lengths, read-only or non-contiguous
parameters, a non-finite learning rate) raises before anything is written.

Layers plug in through their two lists::

    opt = Adam(model.parameters(), lr=1e-3, grads=model.gradients())
    ...; model.backward(dy); opt.step(); opt.zero_grad()

bfloat16 parameters (``ml_dtypes.bfloat16`` arrays, or bnfast's bits view) take bfloat16
gradients; the update is computed in float32 and the parameter rounded once per step. Every
optimizer takes the same keyword-only options for them:

state_dtype : {None, "float32", "bfloat16"}
    The state of bfloat16 parameters: float32 by default (more accurate), or bfloat16, what
    PyTorch keeps for bfloat16 parameters (half the state memory). float32 and float64
    parameters always keep state of their own dtype.
stochastic_rounding : bool
    Round updated bfloat16 parameters stochastically instead of to nearest even: updates
    smaller than half a bfloat16 ulp are then kept in expectation rather than lost. The random
    bits come from (``seed``, step count, position in ``params``, element) by a counter-based
    hash (:func:`bnfast.reference.stochastic_bits`): reproducible, and the same for any thread
    count and ISA.
seed : int
    The stochastic rounding seed, in [0, 2**64).
master_weights : bool
    Keep a float32 copy of each bfloat16 parameter (made at the first step), step that copy
    (float32 state; bfloat16 or float32 gradients) and write it, rounded to nearest even, into
    the bfloat16 parameter after each step: float32 training with bfloat16 weights to compute
    with. The copies are the truth: a change made to a bfloat16 parameter in between is
    overwritten by the next step. They are part of :meth:`Optimizer.state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

from bnfast import _core
from bnfast._arrays import FLOAT_DTYPES, as_array, contiguous, is_bfloat16

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Momentum",
    "Optimizer",
    "RMSprop",
]

Params = Union[Sequence[np.ndarray], Mapping[str, np.ndarray]]
Grads = Union[Sequence[Any], Mapping[str, Any]]


def _label(names: list[str] | None, i: int, what: str) -> str:
    return f"{what}[{names[i]!r}]" if names is not None else f"{what}[{i}]"


def _param_list(params: Params) -> tuple[list[np.ndarray], list[str] | None]:
    if isinstance(params, np.ndarray):
        raise TypeError("params must be a list or dict of arrays, not a single array")
    if isinstance(params, Mapping):
        names: list[str] | None = [str(k) for k in params]
        arrays = list(params.values())
    elif isinstance(params, (list, tuple)):
        names, arrays = None, list(params)
    else:
        raise TypeError(f"params must be a list or dict of arrays, got {type(params).__name__}")
    for i, p in enumerate(arrays):
        label = _label(names, i, "params")
        if not isinstance(p, np.ndarray):
            raise TypeError(f"{label} must be a numpy.ndarray, got {type(p).__name__}")
        if p.dtype not in FLOAT_DTYPES and not is_bfloat16(p.dtype):
            raise TypeError(
                f"{label} must be float32 or float64, or a bfloat16 dtype, got {p.dtype}"
            )
        if not p.flags.c_contiguous:
            raise ValueError(f"{label} must be C-contiguous (it is updated in place)")
        if not p.flags.writeable:
            raise ValueError(f"{label} is read-only")
    return arrays, names


def _grad_list(grads: Grads, names: list[str] | None, n: int) -> list[np.ndarray]:
    """Gradients as a list of ndarrays matching the parameters (checked fully by _core)."""
    if isinstance(grads, np.ndarray):
        raise TypeError("grads must be a list or dict of arrays, not a single array")
    if isinstance(grads, Mapping):
        if names is None:
            raise TypeError("grads is a dict but the parameters were given as a list")
        missing = [k for k in names if k not in grads]
        extra = [k for k in grads if k not in set(names)]
        if missing or extra:
            raise ValueError(
                f"grads keys do not match the parameters: missing {missing}, unexpected {extra}"
            )
        items = [grads[k] for k in names]
    elif isinstance(grads, (list, tuple)):
        items = list(grads)
    else:
        raise TypeError(f"grads must be a list or dict of arrays, got {type(grads).__name__}")
    if len(items) != n:
        raise ValueError(f"grads has {len(items)} arrays, expected {n} (one per parameter)")
    out = []
    for i, g in enumerate(items):
        label = _label(names, i, "grads")
        # Gradients are only read: a non-contiguous one is copied (dtype is checked by _core).
        out.append(contiguous(as_array(g, label), label, keep_0d=True))
    return out


def _check_lr(lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
        raise TypeError(f"lr must be a real number, got {type(lr).__name__}")
    lr = float(lr)
    if not math.isfinite(lr):
        raise ValueError(f"lr must be finite, got {lr}")
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    return lr


def _check_state_dtype(state_dtype: Any) -> str | None:
    if state_dtype is None or state_dtype in ("float32", "bfloat16"):
        return state_dtype
    try:
        dt = np.dtype(state_dtype)
    except TypeError:
        dt = None
    if dt is not None and dt == np.float32:
        return "float32"
    if dt is not None and is_bfloat16(dt):
        return "bfloat16"
    raise ValueError(f"state_dtype must be None, 'float32' or 'bfloat16', got {state_dtype!r}")


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return int(seed)


def _widen(p: np.ndarray) -> np.ndarray:
    """A bfloat16 array's float32 values (exact), for either bfloat16 dtype."""
    return (p.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


class Optimizer:
    """Base class: parameters, stored gradients, state arrays, ``lr`` and checkpoints.

    Subclasses name their hyperparameters in ``_hyper`` and implement ``_update``, which makes
    exactly one call into ``_core`` for all tensors (``_call`` adds the bfloat16 options).
    The bfloat16 options (``state_dtype``, ``stochastic_rounding``, ``seed``,
    ``master_weights``) are described in the module docstring.
    """

    _hyper: tuple[str, ...] = ()

    def __init__(
        self,
        params: Params,
        lr: float,
        *,
        grads: Grads | None = None,
        state_dtype: str | None = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        master_weights: bool = False,
    ) -> None:
        self.params, self._names = _param_list(params)
        self.grads: list[np.ndarray] | None = (
            None if grads is None else _grad_list(grads, self._names, len(self.params))
        )
        self.lr = lr
        self.state_dtype = _check_state_dtype(state_dtype)
        self.stochastic_rounding = bool(stochastic_rounding)
        self.seed = _check_seed(seed)
        self.master_weights = bool(master_weights)
        if self.master_weights and self.stochastic_rounding:
            raise ValueError(
                "master_weights and stochastic_rounding are alternatives: with master weights "
                "the float32 copy keeps the small updates"
            )
        if self.master_weights and self.state_dtype == "bfloat16":
            raise ValueError("master_weights steps float32 copies with float32 state")
        self.steps = 0
        """Number of successful steps taken (Adam's bias-correction ``t``)."""
        self.state: dict[str, list[np.ndarray]] = {}
        """State arrays by kind (``"exp_avg"``, ...), one per parameter, allocated lazily.
        With ``master_weights``, ``"master_weight"`` holds the float32 copy of each bfloat16
        parameter (None for the others)."""

    def _state_dtype(self, p: np.ndarray) -> np.dtype:
        """The dtype of the state kept for parameter p."""
        if not is_bfloat16(p.dtype):
            return p.dtype
        if self.master_weights or self.state_dtype != "bfloat16":
            return np.dtype(np.float32)
        return p.dtype

    @property
    def lr(self) -> float:
        """Learning rate used by the next :meth:`step` (schedules set it)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _check_lr(value)

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters, ``lr`` included."""
        return {"lr": self.lr, **{k: getattr(self, k) for k in self._hyper}}

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({len(self.params)} tensors, {hp})"

    # ---- stepping ------------------------------------------------------------------------

    def _state(self, kind: str, created: list[str]) -> list[np.ndarray]:
        """The state list ``kind``, allocated as zeros on first use (noted in ``created``)."""
        if kind not in self.state:
            self.state[kind] = [np.zeros(p.shape, self._state_dtype(p)) for p in self.params]
            created.append(kind)
        return self.state[kind]

    def _call(self, fn: Any, params_at: int, *args: Any, created: list[str]) -> None:
        """fn(*args) with the bfloat16 options; with master weights the float32 copies stand in
        for the bfloat16 parameters (args[params_at]) and the parameters receive their rounded
        values."""
        kw: dict[str, Any] = {}
        if self.stochastic_rounding:
            kw = {"stochastic_rounding": True, "seed": self.seed}
            if fn is not _core.adam_update:
                kw["step"] = self.steps + 1
        if self.master_weights and any(is_bfloat16(p.dtype) for p in self.params):
            if "master_weight" not in self.state:
                self.state["master_weight"] = [
                    _widen(p) if is_bfloat16(p.dtype) else None  # type: ignore[misc]
                    for p in self.params
                ]
                created.append("master_weight")
            masters = self.state["master_weight"]
            args = list(args)
            args[params_at] = [p if m is None else m for p, m in zip(self.params, masters)]
            kw["params_bf16"] = [None if m is None else p for p, m in zip(self.params, masters)]
        fn(*args, **kw)

    def _update(self, grads: list[np.ndarray], created: list[str]) -> None:
        raise NotImplementedError

    def step(self, grads: Grads | None = None) -> None:
        """Update every parameter in place with one fused kernel call.

        Parameters
        ----------
        grads : list or dict of arrays, optional
            The gradients, matching the parameters one to one (same shape and dtype); by
            default the arrays given as ``grads`` at construction.

        Raises
        ------
        TypeError, ValueError
            On a dtype, shape, length, contiguity, writability or overlap mismatch; nothing is
            modified then (parameters, state and step count stay as they were).
        """
        if grads is None:
            if self.grads is None:
                raise ValueError("no gradients: pass grads to step() or to the constructor")
            g = self.grads
        else:
            g = _grad_list(grads, self._names, len(self.params))
        created: list[str] = []
        try:
            self._update(g, created)
        except BaseException:
            for kind in created:  # a refused first step leaves no state behind
                del self.state[kind]
            raise
        self.steps += 1

    def zero_grad(self) -> None:
        """Zero the stored gradient arrays (no-op when none were given)."""
        for g in self.grads or ():
            g.fill(0)

    # ---- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies) of everything a resumed run needs to continue bit for bit.

        Keys: ``"type"``, ``"hyperparameters"`` (``lr`` included), ``"steps"``, ``"names"``
        (the dict keys of the parameters, or None) and ``"state"`` (kind -> list of arrays).
        The parameters themselves are not included: save them alongside.
        """
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "steps": self.steps,
            "names": None if self._names is None else list(self._names),
            "state": {
                k: [None if a is None else a.copy() for a in v] for k, v in self.state.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; everything is checked before anything is changed."""
        if state.get("type") != type(self).__name__:
            raise ValueError(f"state_dict is for {state.get('type')!r}, not {type(self).__name__}")
        names = state.get("names")
        if (None if names is None else list(names)) != self._names:
            raise ValueError("state_dict parameter names do not match this optimizer's")
        hyper = dict(state["hyperparameters"])
        if set(hyper) != {"lr", *self._hyper}:
            raise ValueError(f"state_dict hyperparameters {sorted(hyper)} do not match")
        lr = _check_lr(hyper["lr"])
        new_state: dict[str, list[np.ndarray]] = {}
        for kind, arrays in dict(state["state"]).items():
            arrays = list(arrays)
            if len(arrays) != len(self.params):
                raise ValueError(
                    f"state {kind!r} has {len(arrays)} arrays, expected {len(self.params)}"
                )
            dtypes = []
            for i, (a, p) in enumerate(zip(arrays, self.params)):
                if kind == "master_weight":
                    dt = np.dtype(np.float32) if is_bfloat16(p.dtype) else None
                else:
                    dt = self._state_dtype(p)
                dtypes.append(dt)
                if (a is None) != (dt is None):
                    raise ValueError(f"state {kind!r}[{i}] should {'' if dt else 'not '}be given")
                if a is None:
                    continue
                a = np.asarray(a)
                if a.shape != p.shape or a.dtype != dt:
                    raise ValueError(
                        f"state {kind!r}[{i}] is {a.dtype}{a.shape}, expected {dt}{p.shape}"
                    )
            new_state[kind] = [
                None if dt is None else np.array(a, dtype=dt, order="C", copy=True)
                for a, dt in zip(arrays, dtypes)
            ]
        steps = int(state["steps"])
        for k in self._hyper:
            setattr(self, k, hyper[k])
        self.lr = lr
        self.steps = steps
        self.state = new_state


class SGD(Optimizer):
    r"""Stochastic gradient descent with PyTorch's options (``torch.optim.SGD``).

    .. math::
        g = \nabla + \lambda w; \quad b = g \text{ (first step)}, \ \
        b = \mu b + (1 - \tau) g \text{ (after)}; \quad
        w \leftarrow w - \alpha\,(\text{nesterov} ? g + \mu b : b)

    Parameters
    ----------
    params : list or dict of arrays
        Updated in place.
    lr : float
        Learning rate :math:`\alpha` (PyTorch's default, 1e-3).
    momentum : float
        :math:`\mu`; 0 is plain gradient descent (no buffer is kept).
    dampening : float
        :math:`\tau`.
    weight_decay : float
        L2 penalty :math:`\lambda` added to the gradient.
    nesterov : bool
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    grads : list or dict of arrays, optional
        Stored gradients used by ``step()`` and zeroed by ``zero_grad()``.
    state_dtype : {None, "float32", "bfloat16"}, optional
        State of bfloat16 parameters (float32 by default; see the module docstring).
    stochastic_rounding : bool, optional
        Round bfloat16 parameters stochastically (reproducible from ``seed``).
    seed : int, optional
        The stochastic rounding seed.
    master_weights : bool, optional
        Step float32 copies of bfloat16 parameters, writing them back rounded.

    ``params``, ``lr`` and ``momentum`` may be positional, as in PyTorch; the rest are
    keyword-only, so a positional call written for another argument order fails loudly.
    """

    _hyper = ("momentum", "dampening", "weight_decay", "nesterov")

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        *,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        grads: Grads | None = None,
        state_dtype: str | None = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        master_weights: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            grads=grads,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            seed=seed,
            master_weights=master_weights,
        )
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening == 0")

    def _update(self, grads: list[np.ndarray], created: list[str]) -> None:
        bufs = None
        if self.momentum != 0:
            bufs = self._state("momentum_buffer", created)
        self._call(
            _core.sgd_update,
            0,
            self.params,
            grads,
            bufs,
            self.lr,
            self.momentum,
            self.dampening,
            self.weight_decay,
            self.nesterov,
            "momentum_buffer" in created,
            created=created,
        )


class Momentum(Optimizer):
    r"""Gradient descent with momentum as the course teaches it.

    .. math::
        v \leftarrow \beta v + (1 - \beta) g, \quad w \leftarrow w - \alpha v

    ``v`` starts at 0: an exponentially weighted average of the gradients over roughly the
    last :math:`1 / (1 - \beta)` steps, without bias correction.

    Relation to PyTorch: ``torch.optim.SGD(momentum=beta)`` keeps :math:`b = \beta b + g`
    (:math:`b = g` on the first step, the same as starting from 0) and steps
    :math:`w \leftarrow w - \alpha' b`. By induction :math:`v = (1 - \beta) b` at every step,
    so this optimizer at learning rate :math:`\alpha` follows exactly PyTorch's at
    :math:`\alpha' = \alpha (1 - \beta)`: the course's :math:`1 - \beta` factor is folded into
    PyTorch's learning rate. (``SGD(momentum=beta, dampening=beta)`` is not the same: its
    first step sets :math:`b = g` rather than :math:`(1 - \beta) g`.)

    ``params`` and ``lr`` (default 1e-3, as :class:`SGD`) may be positional; ``beta`` and
    ``grads`` are keyword-only.
    bfloat16 parameters: ``state_dtype``, ``stochastic_rounding``, ``seed`` and
    ``master_weights`` (keyword-only) as for :class:`SGD` (see the module docstring).
    """

    _hyper = ("beta",)

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        *,
        beta: float = 0.9,
        grads: Grads | None = None,
        state_dtype: str | None = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        master_weights: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            grads=grads,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            seed=seed,
            master_weights=master_weights,
        )
        self.beta = float(beta)
        if not 0 <= self.beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {self.beta}")

    def _update(self, grads: list[np.ndarray], created: list[str]) -> None:
        self._call(
            _core.momentum_update,
            0,
            self.params,
            grads,
            self._state("velocity", created),
            self.lr,
            self.beta,
            created=created,
        )


class RMSprop(Optimizer):
    r"""RMSprop with PyTorch's options (``torch.optim.RMSprop``).

    .. math::
        g = \nabla + \lambda w, \quad s \leftarrow \alpha s + (1 - \alpha) g^2, \quad
        d = \sqrt{s} + \epsilon \ \ (\text{centered: } \sqrt{s - \bar g^2} + \epsilon,\
        \bar g \leftarrow \alpha \bar g + (1 - \alpha) g) \\
        w \leftarrow w - \text{lr}\, g / d \ \ (\text{momentum } \mu > 0:\
        b \leftarrow \mu b + g / d,\ w \leftarrow w - \text{lr}\, b)

    ``eps`` is added outside the square root, as in PyTorch.

    The course's form, :math:`s \leftarrow \beta_2 s + (1 - \beta_2) g^2`,
    :math:`w \leftarrow w - \alpha g / (\sqrt{s} + \epsilon)`, is the special case
    ``alpha = beta2`` without weight decay, centering or momentum: build it with
    :meth:`RMSprop.course` (``beta2=0.999`` by default, the course's value).

    ``params`` and ``lr`` may be positional; the rest are keyword-only.
    bfloat16 parameters: ``state_dtype``, ``stochastic_rounding``, ``seed`` and
    ``master_weights`` (keyword-only) as for :class:`SGD` (see the module docstring).
    """

    _hyper = ("alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(
        self,
        params: Params,
        lr: float = 0.01,
        *,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        grads: Grads | None = None,
        state_dtype: str | None = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        master_weights: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            grads=grads,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            seed=seed,
            master_weights=master_weights,
        )
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.centered = bool(centered)
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")

    @classmethod
    def course(
        cls,
        params: Params,
        lr: float = 0.01,
        *,
        beta2: float = 0.999,
        eps: float = 1e-8,
        grads: Grads | None = None,
        state_dtype: str | None = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        master_weights: bool = False,
    ) -> RMSprop:
        r"""The course's RMSprop: :math:`s \leftarrow \beta_2 s + (1 - \beta_2) g^2`,
        :math:`w \leftarrow w - \alpha g / (\sqrt{s} + \epsilon)` (``alpha = beta2``)."""
        return cls(
            params,
            lr=lr,
            alpha=beta2,
            eps=eps,
            grads=grads,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            seed=seed,
            master_weights=master_weights,
        )

    def _update(self, grads: list[np.ndarray], created: list[str]) -> None:
        sq = self._state("square_avg", created)
        ga = self._state("grad_avg", created) if self.centered else None
        buf = self._state("momentum_buffer", created) if self.momentum > 0 else None
        self._call(
            _core.rmsprop_update,
            0,
            self.params,
            grads,
            sq,
            ga,
            buf,
            self.lr,
            self.alpha,
            self.eps,
            self.weight_decay,
            self.momentum,
            self.centered,
            created=created,
        )


class Adam(Optimizer):
    r"""Adam with bias correction and PyTorch's options (``torch.optim.Adam``).

    .. math::
        g = \nabla + \lambda w, \quad m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \\
        w \leftarrow w - \frac{\alpha}{1 - \beta_1^t}\,
        \frac{m}{\sqrt{\hat v} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`\hat v = v`, or its running maximum with ``amsgrad``. The bias corrections are
    computed in double precision. ``weight_decay`` is an L2 penalty added to the gradient;
    for decoupled weight decay use :class:`AdamW`. ``params`` and ``lr`` may be positional;
    the rest are keyword-only.
    bfloat16 parameters: ``state_dtype``, ``stochastic_rounding``, ``seed`` and
    ``master_weights`` (keyword-only) as for :class:`SGD` (see the module docstring).
    """

    _hyper = ("betas", "eps", "weight_decay", "amsgrad")
    _decoupled = False

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        grads: Grads | None = None,
        state_dtype: str | None = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        master_weights: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            grads=grads,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            seed=seed,
            master_weights=master_weights,
        )
        b1, b2 = betas
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)
        for i, b in enumerate(self.betas):
            if not 0 <= b < 1:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {b}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]

    def _update(self, grads: list[np.ndarray], created: list[str]) -> None:
        m = self._state("exp_avg", created)
        v = self._state("exp_avg_sq", created)
        vmax = self._state("max_exp_avg_sq", created) if self.amsgrad else None
        self._call(
            _core.adam_update,
            0,
            self.params,
            grads,
            m,
            v,
            vmax,
            self.steps + 1,
            self.lr,
            self.betas[0],
            self.betas[1],
            self.eps,
            self.weight_decay,
            self.amsgrad,
            self._decoupled,
            created=created,
        )


class AdamW(Adam):
    r"""Adam with decoupled weight decay (``torch.optim.AdamW``).

    Each step first shrinks the parameters, :math:`w \leftarrow (1 - \alpha\lambda) w`, then
    takes the Adam step on the raw gradient (the decay is not scaled by the adaptive
    denominator). Default ``weight_decay=1e-2``.
    """

    _decoupled = True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        grads: Grads | None = None,
        state_dtype: str | None = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        master_weights: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            grads=grads,
            state_dtype=state_dtype,
            stochastic_rounding=stochastic_rounding,
            seed=seed,
            master_weights=master_weights,
        )
