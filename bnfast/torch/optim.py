"""PyTorch's SGD, Adam, AdamW and RMSprop stepping each parameter group with one bnfast call.

Each class subclasses PyTorch's and overrides only ``step``: constructor arguments, defaults,
``param_groups``, per-parameter state (``momentum_buffer``; ``step``, ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``; ``square_avg``, ``grad_avg``), ``state_dict``/
``load_state_dict``, hooks, ``zero_grad`` and learning-rate schedulers are PyTorch's, so a run
can switch between the two classes at any step. The update runs in place on NumPy views of the
parameters, gradients and state (no copies), every tensor of a group in one kernel call (one
per distinct Adam step count, and SGD's first momentum step apart from later ones).

A group the kernels cannot serve (``maximize``, ``differentiable``, ``capturable``, non-CPU
tensors or dtypes other than float32, float64 and bfloat16, sparse gradients, parameters whose
memory is not dense, state laid out unlike its parameter, hyperparameters outside the kernels'
ranges) is stepped by PyTorch's implementation after a one-time
:class:`~bnfast.torch.FallbackWarning`; ``fused`` and ``foreach`` are accepted and ignored (this
is the fused implementation).

bfloat16 parameters are updated in float32 and rounded once to bfloat16 (to nearest even). Their
state is bfloat16 by default, as PyTorch keeps it, so ``state_dict``s move between the two
libraries unchanged. Two keyword-only options go beyond PyTorch's arguments:

``state_dtype=torch.float32``
    keep new state of bfloat16 parameters in float32 (more accurate moments; a ``state_dict``
    then holds float32 tensors, which PyTorch's ``load_state_dict`` casts to the parameter's
    dtype, and which this class loads as they come);
``stochastic_rounding=True`` (with ``seed``)
    round bfloat16 parameters stochastically, so updates smaller than half a bfloat16 step are
    kept on average instead of lost; the random bits come from (seed, step, tensor, element):
    reproducible, the same for any thread count and ISA.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from itertools import repeat
from operator import is_, methodcaller
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bnfast import _core
from bnfast.torch._fallback import as_numpy, tensor_reason, torch_threads, warn_fallback

try:
    from torch.optim.optimizer import _get_scalar_dtype
except ImportError:  # pragma: no cover - older/newer PyTorch

    def _get_scalar_dtype() -> torch.dtype:
        return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


__all__ = ["SGD", "Adam", "AdamW", "RMSprop"]


class _Unservable(Exception):
    """A group the kernels cannot step; the message is the reason."""


def _order(p: Tensor) -> list[int] | None:
    """None for a contiguous ``p``; else its dimensions from the largest stride to the smallest."""
    if p.is_contiguous():
        return None
    return sorted(range(p.dim()), key=lambda d: -p.stride(d))


def _flat(t: Tensor, order: list[int] | None, what: str) -> np.ndarray:
    """A NumPy view of ``t``'s memory, in the element order ``order`` gives the parameter.

    Updates are elementwise, so a parameter, its gradient and its state only need the same
    layout, not a C-contiguous one (channels-last weights run in place too, viewed 1-D).
    """
    v = t.detach()
    if order is None:
        if v.is_contiguous():
            return as_numpy(v)
    elif v.permute(order).is_contiguous():
        return as_numpy(v.permute(order).reshape(-1))
    raise _Unservable(
        f"{what} of strides {tuple(t.stride())} is not laid out densely like its parameter"
    )


def _new_state(p: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Zero state for ``p``: in its dtype, or ``dtype`` for a bfloat16 ``p`` (state_dtype)."""
    dt = dtype if dtype is not None and p.dtype == torch.bfloat16 else p.dtype
    return torch.zeros_like(p, dtype=dt, memory_format=torch.preserve_format)


class _Plan:
    """A group's parameters, state tensors and their NumPy views as of the last step.

    Reused while nothing changed (the same parameters have gradients, in the same memory and
    layout, with the same state tensors): building the views anew cost ~20 µs per tensor, more
    than the kernel below ~10^5 values. The checks run column-wise through C-level ``map``.
    """

    __slots__ = (
        "contiguous",
        "group",
        "kinds",
        "layouts",
        "names",
        "objects",
        "orders",
        "params",
        "state_dicts",
        "states",
        "step_views",
        "tensors",
    )

    def __init__(self, group: dict[str, Any], kinds: tuple[str, ...], names: tuple[str, ...]):
        self.group = group
        self.kinds = kinds  # the state lists the kernel takes
        self.names = names  # the state entries checked for identity (kinds and "step")
        self.objects: list[Tensor] = []  # the parameters that had gradients
        self.layouts: list[tuple] = []  # (data_ptr, shape, strides) of each
        self.orders: list[list[int] | None] = []
        self.contiguous = True
        self.state_dicts: list[dict[str, Any] | None] = []
        self.tensors: list[list[Tensor]] = []  # per name, every parameter's state tensor
        self.params: list[np.ndarray] = []
        self.states: list[list[np.ndarray]] = []  # per kind, every parameter's view
        self.step_views: list[np.ndarray | None] = []


def _layout(t: Tensor) -> tuple:
    return (t.data_ptr(), t.shape, t.stride())


class _Fused:
    """``step`` for the subclasses: one fused bnfast call per group, or PyTorch's step."""

    _torch_class: type[torch.optim.Optimizer]
    param_groups: list[dict[str, Any]]
    state: dict[Tensor, dict[str, Any]]

    def __init__(
        self,
        params: Any,
        *args: Any,
        state_dtype: torch.dtype | None = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if state_dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(f"state_dtype must be None, torch.float32 or torch.bfloat16, "
                             f"got {state_dtype}")  # fmt: skip
        super().__init__(params, *args, **kwargs)  # type: ignore[call-arg]
        self.state_dtype = state_dtype
        self.stochastic_rounding = bool(stochastic_rounding)
        self.seed = int(seed)
        self.steps_taken = 0  # keys stochastic rounding of optimizers without a step count

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The subclass's signature: PyTorch's, then the keyword-only bfloat16 options."""
        super().__init_subclass__(**kwargs)
        theirs = inspect.signature(cls._torch_class.__init__)
        params = list(theirs.parameters.values())[1:]  # without self
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
            for name, default in (
                ("state_dtype", None),
                ("stochastic_rounding", False),
                ("seed", 0),
            )
        ]
        tail = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
        head = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
        cls.__signature__ = theirs.replace(parameters=head + extra + tail)  # type: ignore[attr-defined]

    def _rounding(self, step: int | None = None) -> dict[str, Any]:
        """The kernels' keyword arguments for rounding bfloat16 parameters this step."""
        if not self.stochastic_rounding:
            return {}
        kw: dict[str, Any] = {"stochastic_rounding": True, "seed": self.seed}
        if step is None:
            kw["step"] = self.steps_taken
        return kw

    def _step_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    # Under torch.compile the step runs eagerly behind a graph break (the kernels work on
    # NumPy views of the tensors' memory, which tracing cannot see); its results are the eager
    # step's.
    @torch.compiler.disable
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (``closure`` re-evaluates the model, as in PyTorch).

        Inside a ``torch.compile``-d function it runs eagerly, behind a graph break.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps_taken += 1
        for group in self.param_groups:
            try:
                reason = _group_reason(group)
                if reason is None:
                    with torch_threads():
                        self._step_group(group)
            except _Unservable as exc:
                reason = str(exc)
            if reason is not None:
                warn_fallback(f"{type(self).__name__}.step", reason)
                self._torch_step([group])
        return loss

    def _view(self, t: Tensor, order: list[int] | None, what: str) -> np.ndarray:
        """``_flat(t)``, cached for tensors that live across steps (parameters and state)."""
        cache: dict[int, tuple[Any, tuple, np.ndarray]] = self.__dict__.setdefault(
            "_bnfast_views", {}
        )
        key = (t.data_ptr(), t.shape, t.stride())
        hit = cache.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == key:
            return hit[2]
        arr = _flat(t, order, what)
        if len(cache) > 64 + 8 * sum(len(g["params"]) for g in self.param_groups):
            cache.clear()  # forget tensors that are gone (replaced state, removed parameters)
        cache[id(t)] = (weakref.ref(t), key, arr)
        return arr

    def _plan(self, group: dict[str, Any], kinds: tuple[str, ...]) -> tuple[_Plan, list] | None:
        """The group's plan and this step's gradient views, or None if anything changed."""
        plan = self.__dict__.get("_bnfast_plans", {}).get(id(group))
        if plan is None or plan.group is not group or plan.kinds != kinds:
            return None
        params = [p for p in group["params"] if p.grad is not None]
        if len(params) != len(plan.objects) or not all(map(is_, params, plan.objects)):
            return None
        if list(map(_layout, params)) != plan.layouts:
            return None
        states = list(map(self.state.get, params))
        if not all(map(is_, states, plan.state_dicts)):
            return None
        for name, tensors in zip(plan.names, plan.tensors):
            if not all(map(is_, map(methodcaller("get", name), states), tensors)):
                return None
        grads = [p.grad for p in params]
        if not all(map(is_, map(type, grads), repeat(Tensor))):
            return None
        try:
            if plan.contiguous:
                return plan, list(map(as_numpy, grads))
            return plan, [_flat(g, o, "a gradient") for g, o in zip(grads, plan.orders)]
        except (RuntimeError, TypeError, _Unservable):
            return None  # the full path names the reason

    def _remember(
        self,
        group: dict[str, Any],
        kinds: tuple[str, ...],
        items: list[tuple[Tensor, list[int] | None]],
        step: bool = False,
    ) -> None:
        """Keep the group's tensors and views (``kinds`` of state, ``step`` counters) for later
        steps; called after a step in which every parameter already had its state."""
        plan = _Plan(group, kinds, (*kinds, "step") if step else kinds)
        plan.states = [[] for _ in kinds]
        plan.tensors = [[] for _ in plan.names]
        for p, order in items:
            st = self.state.get(p)  # None for stateless SGD: .state[p] would add an entry
            plan.objects.append(p)
            plan.layouts.append(_layout(p))
            plan.orders.append(order)
            plan.contiguous &= order is None
            plan.state_dicts.append(st)
            for tensors, k in zip(plan.tensors, plan.names):
                tensors.append(st[k])  # type: ignore[index]
            plan.params.append(self._view(p, order, "a parameter"))
            for views, k in zip(plan.states, kinds):
                views.append(self._view(st[k], order, f"a {k}"))  # type: ignore[index]
            if step:
                plan.step_views.append(self._step_view(st["step"]))  # type: ignore[index]
        plans = self.__dict__.setdefault("_bnfast_plans", {})
        if len(plans) > 2 * len(self.param_groups):
            plans.clear()  # forget groups that are gone
        plans[id(group)] = plan

    def _step_view(self, step: Any) -> np.ndarray | None:
        """A cached NumPy view of a step counter (None for one that is not a plain CPU tensor)."""
        if isinstance(step, Tensor) and step.device.type == "cpu" and not step.requires_grad:
            return self._view(step, None, "a step")
        return None

    def _bump_step(self, state: dict[str, Any]) -> None:
        """``state["step"] += 1`` through a cached NumPy view: a PyTorch op on a 0-d tensor
        costs about 5 µs, which summed over the tensors of a group outweighed the kernel."""
        view = self._step_view(state["step"])
        if view is not None:
            view[...] = view.item() + 1  # the same rounding as adding in the tensor's dtype
        else:
            state["step"] += 1

    def _fast_steps(self, plan: _Plan) -> list[float] | None:
        """The plan's step counts, or None when one is not a plain CPU tensor."""
        if any(v is None for v in plan.step_views):
            return None
        return [v.item() for v in plan.step_views]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.pop("_bnfast_views", None)  # drop views that keep replaced state alive
        self.__dict__.pop("_bnfast_plans", None)
        super().load_state_dict(state_dict)  # type: ignore[misc]

    def _torch_step(self, groups: list[dict[str, Any]]) -> None:
        """PyTorch's own step over ``groups`` only (without running the step hooks twice)."""
        step = self._torch_class.step
        if getattr(step, "hooked", False):
            step = step.__wrapped__  # type: ignore[attr-defined]
        saved = self.param_groups
        self.param_groups = groups
        try:
            step(self)
        finally:
            self.param_groups = saved

    def _with_grads(self, group: dict[str, Any]) -> list[tuple[Tensor, list[int] | None]]:
        """The group's parameters that have a gradient, each with its memory order."""
        out = []
        for p in group["params"]:
            if p.grad is None:
                continue
            reason = tensor_reason(p, "a parameter") or tensor_reason(p.grad, "a gradient", p.dtype)
            if reason:
                raise _Unservable(reason)
            out.append((p, _order(p)))
        return out


def _group_reason(group: dict[str, Any]) -> str | None:
    for flag in ("maximize", "differentiable", "capturable"):
        if group.get(flag):
            return f"{flag}=True"
    return None


def _call(fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
    """One kernel call; a refusal (checked before anything is written) becomes a fallback."""
    try:
        fn(*args, **kw)
    except (ValueError, TypeError) as exc:
        raise _Unservable(f"the kernel refused the group ({exc})") from None


def _try(fn: Callable[..., Any], *args: Any, **kw: Any) -> bool:
    """One kernel call on a plan; False when refused (nothing written), for the full path to
    check the group again and name the reason."""
    try:
        fn(*args, **kw)
    except (ValueError, TypeError):
        return False
    return True


def _bump_steps(steps: list[float], plan: _Plan) -> None:
    """Every step counter of the plan, whose values were ``steps``, += 1."""
    for v, t in zip(plan.step_views, steps):
        v[...] = t + 1  # the same rounding as adding in the tensor's dtype


_RMS_KINDS = ("square_avg", "grad_avg", "momentum_buffer")


def _hyper(value: Any) -> float:
    return float(value.item() if isinstance(value, Tensor) else value)


class SGD(_Fused, torch.optim.SGD):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov, weight decay) on the fused kernel."""

    _torch_class = torch.optim.SGD

    def _step_group(self, group: dict[str, Any]) -> None:
        momentum = _hyper(group["momentum"])
        hyper = (
            _hyper(group["lr"]),
            momentum,
            _hyper(group["dampening"]),
            _hyper(group["weight_decay"]),
            bool(group["nesterov"]),
        )
        kinds = ("momentum_buffer",) if momentum != 0 else ()
        hit = self._plan(group, kinds)
        if hit is not None:
            plan, grads = hit
            bufs = plan.states[0] if kinds else None
            if _try(_core.sgd_update, plan.params, grads, bufs, *hyper, False, **self._rounding()):
                return
        # Two calls at most: parameters whose momentum buffer starts now (buf = g), the rest.
        calls: dict[bool, tuple[list, list, list, list]] = {}
        items = self._with_grads(group)
        for p, order in items:
            buf = self.state[p].get("momentum_buffer") if momentum != 0 else None
            first = momentum != 0 and buf is None
            if first:
                buf = _new_state(p, self.state_dtype)
            ps, gs, bs, new = calls.setdefault(first, ([], [], [], []))
            ps.append(self._view(p, order, "a parameter"))
            gs.append(_flat(p.grad, order, "a gradient"))
            if buf is not None:
                bs.append(self._view(buf, order, "a momentum_buffer"))
            new.append((p, buf) if first else None)
        for first, (ps, gs, bs, new) in calls.items():
            bufs = bs if momentum != 0 else None
            _call(_core.sgd_update, ps, gs, bufs, *hyper, first, **self._rounding())
            for item in new:
                if item is not None:
                    self.state[item[0]]["momentum_buffer"] = item[1]
        self._remember(group, kinds, items)


class Adam(_Fused, torch.optim.Adam):
    """``torch.optim.Adam`` (L2 or decoupled weight decay, AMSGrad) on the fused kernel."""

    _torch_class = torch.optim.Adam

    def _step_group(self, group: dict[str, Any]) -> None:
        amsgrad = bool(group["amsgrad"])
        kinds = ("exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if amsgrad else ()))
        b1, b2 = (_hyper(b) for b in group["betas"])
        hyper = (_hyper(group["lr"]), b1, b2, _hyper(group["eps"]), _hyper(group["weight_decay"]))
        decoupled = bool(group.get("decoupled_weight_decay", False))
        hit = self._plan(group, kinds)
        if hit is not None:
            plan, grads = hit
            steps = self._fast_steps(plan)
            if steps and all(t == steps[0] for t in steps):
                m, v, *vmax = plan.states
                args = (int(steps[0]) + 1, *hyper, amsgrad, decoupled)
                vm = vmax[0] if vmax else None
                rounding = self._rounding(args[0])
                if _try(_core.adam_update, plan.params, grads, m, v, vm, *args, **rounding):
                    _bump_steps(steps, plan)
                    return
        # Bias correction depends on the step count: one call per distinct count (usually one).
        calls: dict[int, tuple[list, list, list, list]] = {}
        items = self._with_grads(group)
        for p, order in items:
            state = self.state[p]
            new = {k: _new_state(p, self.state_dtype) for k in kinds if k not in state}
            if "step" not in state:
                new["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
            step = int(_hyper(state.get("step", new.get("step")))) + 1
            ps, gs, ss, commits = calls.setdefault(step, ([], [], [], []))
            ps.append(self._view(p, order, "a parameter"))
            gs.append(_flat(p.grad, order, "a gradient"))
            ss.append([self._view(state.get(k, new.get(k)), order, f"an {k}") for k in kinds])
            commits.append((state, new))
        for step, (ps, gs, ss, commits) in calls.items():
            m, v, *vmax = ([s[i] for s in ss] for i in range(len(kinds)))
            vm = vmax[0] if amsgrad else None
            args = (step, *hyper, amsgrad, decoupled)
            _call(_core.adam_update, ps, gs, m, v, vm, *args, **self._rounding(step))
            for state, new in commits:
                state.update(new)
                self._bump_step(state)
        self._remember(group, kinds, items, step=True)


class AdamW(Adam, torch.optim.AdamW):
    """``torch.optim.AdamW`` (decoupled weight decay) on the fused kernel."""

    _torch_class = torch.optim.AdamW


class RMSprop(_Fused, torch.optim.RMSprop):
    """``torch.optim.RMSprop`` (centered, momentum, weight decay) on the fused kernel."""

    _torch_class = torch.optim.RMSprop

    def _step_group(self, group: dict[str, Any]) -> None:
        momentum, centered = _hyper(group["momentum"]), bool(group["centered"])
        kinds = ["square_avg"]
        if centered:
            kinds.append("grad_avg")
        if momentum > 0:
            kinds.append("momentum_buffer")
        hyper = (
            _hyper(group["lr"]),
            _hyper(group["alpha"]),
            _hyper(group["eps"]),
            _hyper(group["weight_decay"]),
            momentum,
            centered,
        )
        hit = self._plan(group, tuple(kinds))
        if hit is not None:
            plan, grads = hit
            views = dict(zip(kinds, plan.states))
            square, grad_avg, buf = (views.get(k) for k in _RMS_KINDS)
            steps = self._fast_steps(plan)
            if steps is not None and _try(
                _core.rmsprop_update, plan.params, grads, square, grad_avg, buf, *hyper,
                **self._rounding(),
            ):  # fmt: skip
                _bump_steps(steps, plan)
                return
        ps, gs, commits = [], [], []
        lists: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
        items = self._with_grads(group)
        for p, order in items:
            state = self.state[p]
            new = {k: _new_state(p, self.state_dtype) for k in kinds if k not in state}
            if "step" not in state:
                new["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
            ps.append(self._view(p, order, "a parameter"))
            gs.append(_flat(p.grad, order, "a gradient"))
            for k in kinds:
                lists[k].append(self._view(state.get(k, new.get(k)), order, f"a {k}"))
            commits.append((state, new))
        if not ps:
            return
        square, grad_avg, buf = (lists.get(k) for k in _RMS_KINDS)
        _call(_core.rmsprop_update, ps, gs, square, grad_avg, buf, *hyper, **self._rounding())
        for state, new in commits:
            state.update(new)
            self._bump_step(state)
        self._remember(group, tuple(kinds), items, step=True)
