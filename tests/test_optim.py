"""Optimizer kernels and classes against the float64 NumPy reference, on every ISA and dtype."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import _core
from bnfast import reference as R
from bnfast.nn import BatchNorm
from bnfast.optim import SGD, Adam, AdamW, Momentum, RMSprop, clip_grad_norm, global_norm
from bnfast.testing import assert_close

SIZES = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 257]
BIG = 20000  # spans several kernel work units (8192 elements each)

# (optimizer kind, hyperparameters): every option of every optimizer.
CONFIGS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("momentum", {"lr": 0.1, "beta": 0.9}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "weight_decay": 0.01}),
    ("rmsprop", {"lr": 0.01, "centered": True}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.5}),
    ("rmsprop", {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.1, "momentum": 0.9, "centered": True}),
    ("rmsprop_course", {"lr": 0.01, "beta2": 0.999}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "amsgrad": True, "weight_decay": 0.01}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
]
IDS = [f"{k}-" + "-".join(f"{a}={b}" for a, b in hp.items() if a != "lr") for k, hp in CONFIGS]


def make(kind: str, params, hp: dict, grads=None):
    cls = {"sgd": SGD, "momentum": Momentum, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}
    if kind == "rmsprop_course":
        return RMSprop.course(params, grads=grads, **hp)
    return cls[kind](params, grads=grads, **hp)


def ref_step(kind: str, hp: dict, p, g, state: dict, t: int):
    """One reference step in float64 for one tensor; returns (param, {state kind: array})."""
    f = np.float64
    p, g = p.astype(f), g.astype(f)
    s = {k: v.astype(f) for k, v in state.items()}
    if kind == "sgd":
        new_p, buf = R.sgd(p, g, s.get("momentum_buffer"), **hp)
        return new_p, {} if buf is None else {"momentum_buffer": buf}
    if kind == "momentum":
        v0 = s.get("velocity", np.zeros_like(p))
        new_p, v = R.momentum_course(p, g, v0, **hp)
        return new_p, {"velocity": v}
    if kind == "rmsprop_course":
        new_p, sq = R.rmsprop_course(p, g, s.get("square_avg", np.zeros_like(p)), **hp)
        return new_p, {"square_avg": sq}
    z = np.zeros_like(p)
    if kind == "rmsprop":
        new_p, sq, ga, buf = R.rmsprop(
            p, g, s.get("square_avg", z), s.get("grad_avg", z), s.get("momentum_buffer", z), **hp
        )
        out = {"square_avg": sq}
        if ga is not None:
            out["grad_avg"] = ga
        if buf is not None:
            out["momentum_buffer"] = buf
        return new_p, out
    if kind == "adamw":
        hp = {"weight_decay": 1e-2, **hp}  # AdamW's default
    new_p, m, v, vmax = R.adam(
        p, g, s.get("exp_avg", z), s.get("exp_avg_sq", z), s.get("max_exp_avg_sq", z), t,
        decoupled=kind == "adamw", **hp,
    )  # fmt: skip
    out = {"exp_avg": m, "exp_avg_sq": v}
    if vmax is not None:
        out["max_exp_avg_sq"] = vmax
    return new_p, out


def tensors(rng, sizes, dtype):
    return [rng.normal(size=n).astype(dtype) for n in sizes]


def check_steps(kind, hp, dtype, rng, sizes, steps=4):
    """Runs ``steps`` fused steps; before each, the float64 reference step from the same state."""
    params = tensors(rng, sizes, dtype)
    opt = make(kind, params, hp)
    lr = hp["lr"]
    for t in range(1, steps + 1):
        grads = tensors(rng, sizes, dtype)
        before = [p.copy() for p in params]
        expected = [
            ref_step(kind, hp, p, g, {k: v[i] for k, v in opt.state.items()}, t)
            for i, (p, g) in enumerate(zip(params, grads))
        ]
        opt.step(grads)
        assert opt.steps == t
        for i, (p, (ep, es)) in enumerate(zip(params, expected)):
            assert set(opt.state) == set(es), (set(opt.state), set(es))
            for k, ev in es.items():
                # A state is a weighted sum: scale by the magnitude of its terms.
                assert_close(opt.state[k][i], ev, dtype, ulps=16, scale=np.abs(ev).max() + 1,
                             err_msg=f"{k} tensor {i} step {t}")  # fmt: skip
            step = np.abs(ep - before[i].astype(np.float64))
            # p - lr * u: |p| plus the update's magnitude (u's relative error is a few ulps).
            assert_close(p, ep, dtype, ulps=16, scale=np.abs(before[i]) + step.max() + lr,
                         err_msg=f"param {i} step {t}")  # fmt: skip


@pytest.mark.parametrize(("kind", "hp"), CONFIGS, ids=IDS)
def test_against_reference(isa, dtype, rng, kind, hp):
    check_steps(kind, hp, dtype, rng, [*SIZES, BIG])


@pytest.mark.parametrize(("kind", "hp"), CONFIGS, ids=IDS)
def test_mixed_dtypes_one_call(rng, kind, hp):
    params = [rng.normal(size=n).astype(d) for n, d in [(9, np.float32), (17, np.float64)]]
    grads = [rng.normal(size=p.size).astype(p.dtype) for p in params]
    expected = [ref_step(kind, hp, p, g, {}, 1)[0] for p, g in zip(params, grads)]
    make(kind, params, hp).step(grads)
    for p, e in zip(params, expected):
        assert p.dtype in (np.float32, np.float64)
        assert_close(p, e, p.dtype, ulps=16, scale=1.0)


@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    lr=st.floats(1e-4, 1.0),
    scale=st.floats(1e-3, 1e3),
    kind=st.sampled_from(["sgd-nesterov", "adam", "adamw-amsgrad", "rmsprop-centered"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_shapes_and_values(isa, dtype, sizes, lr, scale, kind, seed):
    rng = np.random.default_rng(seed)
    k, hp = {
        "sgd-nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}),
        "adam": ("adam", {}),
        "adamw-amsgrad": ("adamw", {"amsgrad": True}),
        "rmsprop-centered": ("rmsprop", {"centered": True, "momentum": 0.3}),
    }[kind]
    params = [(scale * rng.normal(size=n)).astype(dtype) for n in sizes]
    grads = [(scale * rng.normal(size=n)).astype(dtype) for n in sizes]
    hp = {**hp, "lr": lr}
    opt = make(k, params, hp)
    for t in (1, 2):
        exp = [
            ref_step(k, hp, p, g, {n: v[i] for n, v in opt.state.items()}, t)
            for i, (p, g) in enumerate(zip(params, grads))
        ]
        before = [p.copy() for p in params]
        opt.step(grads)
        for p, b, (e, _) in zip(params, before, exp):
            upd = np.abs(e - b).max() if e.size else 0.0
            assert_close(p, e, dtype, ulps=16, scale=np.abs(b) + upd + lr)


@pytest.mark.parametrize(("kind", "hp"), CONFIGS, ids=IDS)
def test_thread_count_does_not_change_results(rng, threads, kind, hp):
    sizes = [300_000, 5, 70_000]
    params0 = tensors(rng, sizes, np.float32)
    grads = [tensors(rng, sizes, np.float32) for _ in range(3)]
    results = []
    for n in (1, 2):
        bnfast.set_num_threads(n)
        params = [p.copy() for p in params0]
        opt = make(kind, params, hp)
        for g in grads:
            opt.step(g)
        results.append(params)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ---- checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "hp"), CONFIGS, ids=IDS)
def test_checkpoint_resumes_bit_for_bit(rng, kind, hp):
    sizes = [5, 33, 1000]
    params = tensors(rng, sizes, np.float32)
    grads = [tensors(rng, sizes, np.float32) for _ in range(7)]
    opt = make(kind, params, hp)
    for g in grads[:3]:
        opt.step(g)
    saved_params = [p.copy() for p in params]
    checkpoint = pickle.loads(pickle.dumps(opt.state_dict()))
    for g in grads[3:]:
        opt.step(g)
    # A fresh optimizer (different defaults on purpose) restored from the checkpoint.
    resumed = [p.copy() for p in saved_params]
    other = make(kind, resumed, {**hp, "lr": 0.5})
    other.load_state_dict(checkpoint)
    assert other.lr == hp["lr"]
    assert other.steps == 3
    for g in grads[3:]:
        other.step(g)
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a, b)
    for k in opt.state:
        for a, b in zip(opt.state[k], other.state[k]):
            np.testing.assert_array_equal(a, b)


def test_state_dict_is_a_copy(rng):
    params = tensors(rng, [10], np.float32)
    opt = Adam(params, lr=0.1)
    opt.step(tensors(rng, [10], np.float32))
    sd = opt.state_dict()
    m = sd["state"]["exp_avg"][0].copy()
    opt.step(tensors(rng, [10], np.float32))
    np.testing.assert_array_equal(sd["state"]["exp_avg"][0], m)


def test_load_state_dict_refusals(rng):
    params = tensors(rng, [4, 6], np.float32)
    opt = Adam(params, lr=0.1)
    opt.step(tensors(rng, [4, 6], np.float32))
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="SGD"):
        SGD(params, lr=0.1).load_state_dict(sd)
    bad = dict(sd, state={"exp_avg": [np.zeros(4, np.float32), np.zeros(5, np.float32)]})
    fresh = Adam(params, lr=0.2)
    with pytest.raises(ValueError, match="exp_avg"):
        fresh.load_state_dict(bad)
    assert fresh.lr == 0.2 and fresh.steps == 0 and fresh.state == {}
    with pytest.raises(ValueError, match="names"):
        Adam({"a": params[0], "b": params[1]}, lr=0.1).load_state_dict(sd)


# ---- API --------------------------------------------------------------------------------


def test_dict_params_and_stored_grads(rng):
    w = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    dw, db = np.ones_like(w), np.ones_like(b)
    opt = SGD({"w": w, "b": b}, lr=0.5, grads={"b": db, "w": dw})
    w0 = w.copy()
    opt.step()
    np.testing.assert_allclose(w, w0 - 0.5)
    opt.zero_grad()
    assert not dw.any() and not db.any()
    opt.step({"w": dw, "b": db + 2})
    np.testing.assert_allclose(w, w0 - 0.5)
    with pytest.raises(ValueError, match="missing"):
        opt.step({"w": dw})
    assert opt.state_dict()["names"] == ["w", "b"]


def test_layers_parameters_and_gradients(rng):
    bn = BatchNorm(4)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    opt = Adam(bn.parameters(), lr=0.1, grads=bn.gradients())
    bn(x)
    bn.backward(rng.normal(size=(16, 4)).astype(np.float32))
    w0 = bn.weight.copy()
    opt.step()
    assert not np.array_equal(bn.weight, w0)
    opt.zero_grad()
    assert not bn.dweight.any()


def test_lr_is_settable_and_checked(rng):
    params = tensors(rng, [3], np.float32)
    opt = SGD(params, lr=0.1)
    opt.lr = 0.25
    assert opt.lr == 0.25
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="lr"):
            opt.lr = bad
    with pytest.raises(TypeError, match="lr"):
        opt.lr = "0.1"
    assert opt.lr == 0.25


def test_momentum_relates_to_pytorch_sgd(rng):
    """Course momentum at lr a is PyTorch's SGD(momentum=b) at lr a (1 - b), from step 1."""
    p1 = tensors(rng, [50], np.float64)
    p2 = [p1[0].copy()]
    a, b = 0.1, 0.9
    course = Momentum(p1, lr=a, beta=b)
    torch_like = SGD(p2, lr=a * (1 - b), momentum=b)
    for _ in range(6):
        g = tensors(rng, [50], np.float64)
        course.step(g)
        torch_like.step(g)
        np.testing.assert_allclose(
            course.state["velocity"][0],
            (1 - b) * torch_like.state["momentum_buffer"][0],
            rtol=1e-13,
            atol=1e-15,
        )
    np.testing.assert_allclose(p1[0], p2[0], rtol=1e-12, atol=1e-12)


# ---- refusals leave everything untouched ------------------------------------------------


def snapshot(opt):
    return (
        [p.copy() for p in opt.params],
        {k: [a.copy() for a in v] for k, v in opt.state.items()},
        opt.steps,
    )


def assert_untouched(opt, snap):
    params, state, steps = snap
    for a, b in zip(opt.params, params):
        np.testing.assert_array_equal(a, b)
    assert set(opt.state) == set(state)
    for k in state:
        for a, b in zip(opt.state[k], state[k]):
            np.testing.assert_array_equal(a, b)
    assert opt.steps == steps


@pytest.mark.parametrize(("kind", "hp"), CONFIGS, ids=IDS)
def test_refusals_modify_nothing(rng, kind, hp):
    sizes = [8, 20000, 5]
    params = [*tensors(rng, sizes, np.float32), rng.normal(size=6)]  # last one float64
    good = [rng.normal(size=p.shape).astype(p.dtype) for p in params]
    opt = make(kind, params, hp)
    opt.step(good)
    cases = [
        (ValueError, "grads\\[2\\] must have shape", [*good[:2], good[2][:4], *good[3:]]),
        (TypeError, "grads\\[3\\] must be float64", [*good[:3], good[3].astype(np.float32)]),
        (ValueError, "grads has 3 arrays", good[:3]),
        (TypeError, "grads\\[1\\]", [good[0], None, *good[2:]]),
        (TypeError, "grads", "not a list"),
    ]
    for exc, match, grads in cases:
        snap = snapshot(opt)
        with pytest.raises(exc, match=match):
            opt.step(grads)
        assert_untouched(opt, snap)
    # A parameter made read-only after construction; a parameter listed twice.
    params[3].flags.writeable = False
    snap = snapshot(opt)
    with pytest.raises(ValueError, match="params\\[3\\] is read-only"):
        opt.step(good)
    assert_untouched(opt, snap)
    params[3].flags.writeable = True
    twice = make(kind, [params[0], params[1], params[0]], hp)
    snap = snapshot(twice)
    with pytest.raises(ValueError, match="overlaps"):
        twice.step([good[0], good[1], good[0]])
    assert_untouched(twice, snap)
    assert twice.state == {}  # a refused first step allocates no state


def test_refusals_in_core_modify_nothing(rng):
    params = tensors(rng, [10, 10], np.float32)
    grads = tensors(rng, [10, 10], np.float32)
    m = [np.zeros(10, np.float32) for _ in range(2)]
    v = [np.zeros(10, np.float32) for _ in range(2)]
    before = [p.copy() for p in params]
    for lr in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match="lr"):
            _core.adam_update(params, grads, m, v, None, 1, lr, 0.9, 0.999, 1e-8, 0, False, False)
    with pytest.raises(ValueError, match="overlaps"):
        _core.adam_update(params, grads, m, [v[0], params[1]], None, 1, 0.1, 0.9, 0.999, 1e-8,
                          0, False, False)  # fmt: skip
    with pytest.raises(ValueError, match="step"):
        _core.adam_update(params, grads, m, v, None, 0, 0.1, 0.9, 0.999, 1e-8, 0, False, False)
    with pytest.raises(ValueError, match="beta1"):
        _core.adam_update(params, grads, m, v, None, 1, 0.1, 1.0, 0.999, 1e-8, 0, False, False)
    with pytest.raises(ValueError, match="momentum_buffer"):
        _core.sgd_update(params, grads, None, 0.1, 0.9, 0.0, 0.0, False, True)
    with pytest.raises(ValueError, match="nesterov"):
        _core.sgd_update(params, grads, m, 0.1, 0.9, 0.5, 0.0, True, True)
    for a, b in zip(params, before):
        np.testing.assert_array_equal(a, b)
    assert not any(x.any() for x in m + v)


def test_constructor_refusals(rng):
    p = rng.normal(size=(4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        SGD([p[:, ::2]], lr=0.1)
    ro = p.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD([ro], lr=0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        SGD([np.zeros(3, np.int32)], lr=0.1)
    with pytest.raises(TypeError, match="list or dict"):
        SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        Adam([p], lr=float("nan"))
    with pytest.raises(ValueError, match="nesterov"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="no gradients"):
        SGD([p], lr=0.1).step()


def test_noncontiguous_grads_are_copied(rng):
    p = rng.normal(size=(4, 3)).astype(np.float32)
    g = rng.normal(size=(4, 6)).astype(np.float32)[:, ::2]
    expected = p - 0.1 * g
    SGD([p], lr=0.1).step([g])
    assert_close(p, expected, np.float32, ulps=4, scale=1.0)


def test_empty_tensors_and_lists(rng):
    opt = Adam([np.zeros(0, np.float32), np.zeros((2, 0))], lr=0.1)
    opt.step([np.zeros(0, np.float32), np.zeros((2, 0))])
    Adam([], lr=0.1).step([])
    assert clip_grad_norm([], 1.0) == 0.0


# ---- clipping ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clip_grad_norm_against_reference(isa, dtype, rng, max_norm):
    grads = tensors(rng, [*SIZES, BIG], dtype)
    expected, total_ref = R.clip_grad_norm([g.astype(np.float64) for g in grads], max_norm)
    before = [g.copy() for g in grads]
    total = clip_grad_norm(grads, max_norm)
    # A sum of n squares: relative error a few ulps times log2 of the blocking depth.
    assert_close(total, total_ref, dtype, ulps=32)
    for g, e, b in zip(grads, expected, before):
        if max_norm > total_ref:
            np.testing.assert_array_equal(g, b)  # not clipped: untouched
        else:
            assert_close(g, e, dtype, ulps=32)


def test_clip_dict_mixed_dtypes_and_global_norm(rng):
    grads = {"a": rng.normal(size=10).astype(np.float32), "b": rng.normal(size=7)}
    total_ref = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    assert_close(global_norm(grads), total_ref, np.float32, ulps=8)
    total = clip_grad_norm(grads, 1.0)
    assert_close(total, total_ref, np.float32, ulps=8)
    assert_close(global_norm(grads), total_ref / (total_ref + 1e-6), np.float32, ulps=16)


def test_clip_is_deterministic_across_threads(rng, threads):
    grads = tensors(rng, [1_000_003, 17, 300_000], np.float32)
    norms = []
    for n in (1, 2):
        bnfast.set_num_threads(n)
        work = [g.copy() for g in grads]
        norms.append((clip_grad_norm(work, 1.0), work))
    assert norms[0][0] == norms[1][0]
    for a, b in zip(norms[0][1], norms[1][1]):
        np.testing.assert_array_equal(a, b)


def test_clip_nonfinite(rng):
    grads = tensors(rng, [5, 5], np.float32)
    grads[1][2] = np.nan
    before = [g.copy() for g in grads]
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    for a, b in zip(grads, before):
        np.testing.assert_array_equal(a, b)
    total = clip_grad_norm(grads, 1.0)  # PyTorch's default: the NaN coefficient is applied
    assert np.isnan(total) and np.isnan(grads[0]).all()


def test_clip_refusals(rng):
    g = rng.normal(size=5).astype(np.float32)
    ro = g.copy()
    ro.flags.writeable = False
    before = g.copy()
    with pytest.raises(ValueError, match="read-only"):
        clip_grad_norm([g * 100, ro], 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([g], float("nan"))
    with pytest.raises(ValueError, match="overlaps"):
        clip_grad_norm([g, g], 1e-3)
    np.testing.assert_array_equal(g, before)


# ---- PyTorch parity (only where torch is installed) -------------------------------------


@pytest.mark.parametrize(("kind", "hp"), CONFIGS, ids=IDS)
def test_matches_pytorch(rng, kind, hp):
    torch = pytest.importorskip("torch")
    if kind in ("momentum", "rmsprop_course"):
        pytest.skip("course form: no PyTorch class (see test_momentum_relates_to_pytorch_sgd)")
    cls = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW}[kind]  # fmt: skip
    params = tensors(rng, [7, 40], np.float64)
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    topt = cls(tp, **hp)
    opt = make(kind, params, hp)
    for _ in range(5):
        grads = tensors(rng, [7, 40], np.float64)
        for t, g in zip(tp, grads):
            t.grad = torch.tensor(g)
        topt.step()
        opt.step(grads)
    for p, t in zip(params, tp):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_every_kernel_slot_is_filled():
    assert not [s for s in _core.empty_kernel_slots() if s.startswith("optim/")]
