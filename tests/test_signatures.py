"""Signatures against PyTorch's: a positional call written for PyTorch means the same here, or fails.

Every public function and class with a PyTorch twin is compared with ``inspect.signature``:
bnfast's positional parameters must be a prefix of PyTorch's positional parameters, with the
same names and defaults, and every other parameter must follow the rules below. Any difference
outside this fixed list fails the test:

1. keyword-only where PyTorch allows positional (a positional call then raises TypeError);
2. the first argument's name (``x``, ``logits``, ``grads``, ``params`` for ``input``,
   ``parameters``);
3. the extra keyword-only arguments :data:`EXTRAS` (``grads=``, ``axis=``, ``out=``,
   ``grad_output=``, the optimizers' bfloat16 options); ``axis`` stands for ``softmax``'s
   ``dim``;
4. PyTorch arguments bnfast does not take (passing one raises TypeError): ``size_average``
   and ``reduce``, deprecated in PyTorch, and those in :data:`ABSENT`;
5. ``bnfast.batch_norm``'s running statistics may be left out (default None; PyTorch requires
   them, and accepts None in training);
6. ``clip_grad_norm`` works on arrays and returns a float.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import bnfast  # noqa: E402
import bnfast.torch as bt  # noqa: E402
from bnfast import optim  # noqa: E402

P = inspect.Parameter
POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)

#: Rule 2: first-argument names that may replace PyTorch's.
FIRST_NAMES = {"input": {"x", "logits"}, "parameters": {"grads"}, "params": {"params"}}
#: Rule 3: arguments bnfast adds (keyword-only).
EXTRAS = {"grads", "axis", "out", "grad_output"}
#: bfloat16 options of the optimizers (keyword-only like the rest): the state's dtype,
#: stochastic rounding of the parameters and its seed, float32 master weights.
EXTRAS |= {"state_dtype", "stochastic_rounding", "seed", "master_weights"}
#: Rule 4: PyTorch arguments bnfast does not take. The deprecated loss switches; PyTorch's
#: implementation switches (bnfast has one fused CPU path); options bnfast does not offer
#: (``maximize``, Adam's ``decoupled_weight_decay`` (use AdamW), ``norm_type`` (the 2-norm
#: only), softmax's ``dtype``, ``_stacklevel``); ``dim`` (bnfast's ``axis``).
ABSENT = {
    "size_average",
    "reduce",
    "foreach",
    "fused",
    "capturable",
    "differentiable",
    "maximize",
    "decoupled_weight_decay",
    "norm_type",
    "dtype",
    "_stacklevel",
    "dim",
}
#: Rule 5: parameters PyTorch requires that bnfast lets the caller leave out.
OPTIONAL = {("batch_norm", "running_mean"), ("batch_norm", "running_var")}

PAIRS = [
    (bnfast.batch_norm, F.batch_norm),
    (bnfast.softmax, F.softmax),
    (bnfast.log_softmax, F.log_softmax),
    (bnfast.softmax_cross_entropy, F.cross_entropy),
    (bnfast.sigmoid_binary_cross_entropy, F.binary_cross_entropy_with_logits),
    (optim.SGD, torch.optim.SGD),
    (optim.Adam, torch.optim.Adam),
    (optim.AdamW, torch.optim.AdamW),
    (optim.RMSprop, torch.optim.RMSprop),
    (optim.clip_grad_norm, torch.nn.utils.clip_grad_norm_),
    *[(getattr(bt.functional, n), getattr(F, n)) for n in bt.functional.__all__],
    *[(getattr(bt.optim, n), getattr(torch.optim, n)) for n in bt.optim.__all__],
]


def _id(pair: tuple[Any, Any]) -> str:
    ours = pair[0]
    return f"{ours.__module__}.{ours.__qualname__}"


def _same_default(a: Any, b: Any) -> bool:
    if a is P.empty or b is P.empty:
        return a is b
    return type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float)))


def differences(ours: Any, theirs: Any) -> list[str]:
    """What differs between the two signatures, beyond the documented rules."""
    name = ours.__name__
    mine = list(inspect.signature(ours).parameters.values())
    torchs = list(inspect.signature(theirs).parameters.values())
    by_name = {p.name: p for p in torchs}
    diffs = []
    if any(p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD) for p in mine):
        diffs.append("takes *args or **kwargs")
    first_torch = torchs[0].name
    first_ok = {first_torch} | FIRST_NAMES.get(first_torch, set())
    if mine[0].name not in first_ok:
        diffs.append(f"first argument {mine[0].name!r}, PyTorch's is {first_torch!r}")
    mine_pos = [p for p in mine if p.kind in POSITIONAL]
    torch_pos = [p for p in torchs if p.kind in POSITIONAL]
    for i, p in enumerate(mine_pos[1:], 1):
        if i >= len(torch_pos):
            diffs.append(f"positional {p.name!r} at {i}: PyTorch has {len(torch_pos)} positional")
            continue
        q = torch_pos[i]
        if p.name != q.name:
            diffs.append(f"positional {i} is {p.name!r}, PyTorch's is {q.name!r}")
    for p in mine[1:]:
        q = by_name.get(p.name)
        if q is None:
            if p.name not in EXTRAS:
                diffs.append(f"{p.name!r} is not PyTorch's and not a documented extra")
            elif p.kind is not P.KEYWORD_ONLY:
                diffs.append(f"extra {p.name!r} is not keyword-only")
            continue
        if q.kind is P.KEYWORD_ONLY and p.kind is not P.KEYWORD_ONLY:
            diffs.append(f"{p.name!r} is positional, keyword-only in PyTorch")
        if (name, p.name) in OPTIONAL and q.default is P.empty and p.default is None:
            continue
        if not (_same_default(p.default, q.default) and p.default == q.default):
            diffs.append(f"{p.name!r} defaults to {p.default!r}, PyTorch's to {q.default!r}")
    names = {p.name for p in mine}
    for q in torchs[1:]:
        if q.name not in names and q.name not in ABSENT:
            diffs.append(f"PyTorch's {q.name!r} is missing (not in the documented ABSENT list)")
    return diffs


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=[_id(p) for p in PAIRS])
def test_signature_matches_pytorch(ours, theirs):
    assert differences(ours, theirs) == []


def test_the_rules_catch_a_swapped_order():
    """The checker itself: SGD's old order (nesterov before weight_decay) is reported."""

    def sgd_before(params, lr, momentum=0, dampening=0, nesterov=False, weight_decay=0): ...

    sgd_before.__name__ = "SGD"
    assert any("nesterov" in d for d in differences(sgd_before, torch.optim.SGD))

    def bce_before(logits, targets, weight=None, pos_weight=None, reduction="mean"): ...

    found = differences(bce_before, F.binary_cross_entropy_with_logits)
    assert any("targets" in d for d in found) and any("pos_weight" in d for d in found)


def test_momentum_follows_the_pattern():
    """The course's Momentum has no PyTorch twin: (params, lr, *, beta, grads) like the rest."""
    params = list(inspect.signature(optim.Momentum).parameters.values())
    assert [(p.name, p.kind) for p in params] == [
        ("params", P.POSITIONAL_OR_KEYWORD),
        ("lr", P.POSITIONAL_OR_KEYWORD),
        ("beta", P.KEYWORD_ONLY),
        ("grads", P.KEYWORD_ONLY),
        ("state_dtype", P.KEYWORD_ONLY),
        ("stochastic_rounding", P.KEYWORD_ONLY),
        ("seed", P.KEYWORD_ONLY),
        ("master_weights", P.KEYWORD_ONLY),
    ]
    course = list(inspect.signature(optim.RMSprop.course).parameters.values())
    assert [p.name for p in course if p.kind in POSITIONAL] == ["params", "lr"]


def test_positional_calls_in_the_old_orders_fail():
    p = [np.zeros(3, np.float32)]
    x = np.zeros((2, 3), np.float32)
    calls = [
        lambda: optim.SGD(p, 0.1, 0.9, 0.0, 0.01),  # PyTorch's 4th is weight_decay
        lambda: optim.SGD(p, 0.1, 0.9, 0.0, True),  # bnfast's old 4th was nesterov
        lambda: optim.Adam(p, 0.1, (0.9, 0.99)),
        lambda: optim.Momentum(p, 0.1, 0.9),
        lambda: optim.clip_grad_norm([x.copy()], 1.0, 2.0),  # PyTorch's 3rd is norm_type
        lambda: bnfast.sigmoid_binary_cross_entropy(x, x, None, "mean"),  # PyTorch: size_average
        lambda: bnfast.sigmoid_binary_cross_entropy(x, x, None, np.ones(3, np.float32)),
        lambda: bnfast.softmax_cross_entropy(x, np.zeros(2, np.int64), None, -100),
        lambda: bnfast.softmax(x, 1),
        lambda: bnfast.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, 1),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            call()


def test_defaults_as_pytorch():
    p = [np.zeros(3, np.float32)]
    assert optim.SGD(p).lr == torch.optim.SGD([torch.zeros(1)]).defaults["lr"]
    assert optim.Momentum(p).lr == optim.SGD(p).lr
    for ours, theirs in ((optim.Adam, torch.optim.Adam), (optim.RMSprop, torch.optim.RMSprop)):
        assert ours(p).lr == theirs([torch.zeros(1)]).defaults["lr"]


def test_clip_grad_norm_works_on_arrays_and_returns_a_float():
    assert inspect.signature(optim.clip_grad_norm).return_annotation in (float, "float")
    total = optim.clip_grad_norm([np.full(4, 3.0, np.float32)], 1.0, error_if_nonfinite=True)
    assert type(total) is float and total == 6.0


def test_targets_keyword_is_deprecated():
    x = np.array([[0.5, -1.0]], np.float32)
    y = np.array([[1.0, 0.0]], np.float32)
    want = bnfast.sigmoid_binary_cross_entropy(x, target=y)
    with pytest.warns(DeprecationWarning, match="targets= is deprecated, use target="):
        got = bnfast.sigmoid_binary_cross_entropy(x, targets=y)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError, match="both"):
            bnfast.sigmoid_binary_cross_entropy(x, targets=y, target=y)


def test_state_key_is_pytorchs():
    """One name for the momentum buffer: PyTorch's state key ``momentum_buffer``."""
    p = [np.zeros(3, np.float32)]
    for opt in (optim.SGD(p, momentum=0.9), optim.RMSprop(p, momentum=0.5)):
        opt.step([np.ones(3, np.float32)])
        assert "momentum_buffer" in opt.state
