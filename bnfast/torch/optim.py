"""PyTorch's SGD, Adam, AdamW and RMSprop stepping each parameter group with one bnfast call.

Each class subclasses PyTorch's and overrides only ``step``: constructor arguments, defaults,
``param_groups``, per-parameter state (``momentum_buffer``; ``step``, ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``; ``square_avg``, ``grad_avg``), ``state_dict``/
``load_state_dict``, hooks, ``zero_grad`` and learning-rate schedulers are PyTorch's, so a run
can switch between the two classes at any step. The update runs in place on NumPy views of the
parameters, gradients and state (no copies), every tensor of a group in one kernel call (one
per distinct Adam step count, and SGD's first momentum step apart from later ones).

A group the kernels cannot serve (``maximize``, ``differentiable``, ``capturable``, non-CPU
or non-float32/float64 tensors, sparse gradients, parameters whose memory is not dense, state
laid out unlike its parameter, hyperparameters outside the kernels' ranges) is stepped by
PyTorch's implementation after a one-time :class:`~bnfast.torch.FallbackWarning`; ``fused``
and ``foreach`` are accepted and ignored (this is the fused implementation).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bnfast import _core
from bnfast.torch._fallback import tensor_reason, warn_fallback

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
            return v.numpy()
    elif v.permute(order).is_contiguous():
        return v.permute(order).reshape(-1).numpy()
    raise _Unservable(
        f"{what} of strides {tuple(t.stride())} is not laid out densely like its parameter"
    )


def _new_state(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


class _Fused:
    """``step`` for the subclasses: one fused bnfast call per group, or PyTorch's step."""

    _torch_class: type[torch.optim.Optimizer]
    param_groups: list[dict[str, Any]]
    state: dict[Tensor, dict[str, Any]]

    def _step_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step (``closure`` re-evaluates the model, as in PyTorch)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            try:
                reason = _group_reason(group)
                if reason is None:
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

    def _bump_step(self, state: dict[str, Any]) -> None:
        """``state["step"] += 1`` through a cached NumPy view: a PyTorch op on a 0-d tensor
        costs about 5 µs, which summed over the tensors of a group outweighed the kernel."""
        step = state["step"]
        if isinstance(step, Tensor) and step.device.type == "cpu" and not step.requires_grad:
            self._view(step, None, "a step")[...] += 1
        else:
            state["step"] += 1

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.pop("_bnfast_views", None)  # drop views that keep replaced state alive
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


def _call(fn: Callable[..., Any], *args: Any) -> None:
    """One kernel call; a refusal (checked before anything is written) becomes a fallback."""
    try:
        fn(*args)
    except (ValueError, TypeError) as exc:
        raise _Unservable(f"the kernel refused the group ({exc})") from None


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
        # Two calls at most: parameters whose momentum buffer starts now (buf = g), the rest.
        calls: dict[bool, tuple[list, list, list, list]] = {}
        for p, order in self._with_grads(group):
            buf = self.state[p].get("momentum_buffer") if momentum != 0 else None
            first = momentum != 0 and buf is None
            if first:
                buf = _new_state(p)
            ps, gs, bs, new = calls.setdefault(first, ([], [], [], []))
            ps.append(self._view(p, order, "a parameter"))
            gs.append(_flat(p.grad, order, "a gradient"))
            if buf is not None:
                bs.append(self._view(buf, order, "a momentum_buffer"))
            new.append((p, buf) if first else None)
        for first, (ps, gs, bs, new) in calls.items():
            _call(_core.sgd_update, ps, gs, bs if momentum != 0 else None, *hyper, first)
            for item in new:
                if item is not None:
                    self.state[item[0]]["momentum_buffer"] = item[1]


class Adam(_Fused, torch.optim.Adam):
    """``torch.optim.Adam`` (L2 or decoupled weight decay, AMSGrad) on the fused kernel."""

    _torch_class = torch.optim.Adam

    def _step_group(self, group: dict[str, Any]) -> None:
        amsgrad = bool(group["amsgrad"])
        kinds = ("exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if amsgrad else ()))
        b1, b2 = (_hyper(b) for b in group["betas"])
        hyper = (_hyper(group["lr"]), b1, b2, _hyper(group["eps"]), _hyper(group["weight_decay"]))
        decoupled = bool(group.get("decoupled_weight_decay", False))
        # Bias correction depends on the step count: one call per distinct count (usually one).
        calls: dict[int, tuple[list, list, list, list]] = {}
        for p, order in self._with_grads(group):
            state = self.state[p]
            new = {k: _new_state(p) for k in kinds if k not in state}
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
            _call(_core.adam_update, ps, gs, m, v, vm, step, *hyper, amsgrad, decoupled)
            for state, new in commits:
                state.update(new)
                self._bump_step(state)


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
        ps, gs, commits = [], [], []
        lists: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
        for p, order in self._with_grads(group):
            state = self.state[p]
            new = {k: _new_state(p) for k in kinds if k not in state}
            if "step" not in state:
                new["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
            ps.append(self._view(p, order, "a parameter"))
            gs.append(_flat(p.grad, order, "a gradient"))
            for k in kinds:
                lists[k].append(self._view(state.get(k, new.get(k)), order, f"a {k}"))
            commits.append((state, new))
        if not ps:
            return
        _call(
            _core.rmsprop_update,
            ps,
            gs,
            lists["square_avg"],
            lists.get("grad_avg"),
            lists.get("momentum_buffer"),
            _hyper(group["lr"]),
            _hyper(group["alpha"]),
            _hyper(group["eps"]),
            _hyper(group["weight_decay"]),
            momentum,
            centered,
        )
        for state, new in commits:
            state.update(new)
            self._bump_step(state)
