"""bfloat16 parameters in the fused optimizers: every optimizer and option against the float64
reference (rounded once per step), bfloat16 state, mixed lists, stochastic rounding (exact bits,
reproducibility, thread and ISA independence, bias, effect), master weights, clipping, PyTorch
and refused inputs."""

from __future__ import annotations

import numpy as np
import pytest

import bnfast
from bnfast import _core
from bnfast import reference as R
from bnfast._arrays import BFLOAT16_BITS
from bnfast.optim import SGD, Adam, AdamW, Momentum, RMSprop, clip_grad_norm, global_norm
from bnfast.testing import assert_bfloat16_within

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

SIZES = [0, 1, 7, 16, 17, 33, 0, 257, 20000]  # empty tensors among non-empty; several units

# Weight decays exact in float32: the kernel's float32 coefficient is then the reference's, and
# g + wd * p cancels alike in both (with 0.1, bfloat16 values such as p = -2.65625, g = 0.265625
# cancel exactly in float64 but not in float32, and RMSprop divides what is left by eps).
WD = 2.0**-7
CONFIGS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "weight_decay": WD}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5, "weight_decay": WD}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": WD}),
    ("momentum", {"lr": 0.1, "beta": 0.9}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "weight_decay": WD}),
    ("rmsprop", {"lr": 0.01, "centered": True}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.5}),
    (
        "rmsprop",
        {"lr": 0.01, "alpha": 0.9, "weight_decay": 8 * WD, "momentum": 0.9, "centered": True},
    ),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": WD}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "amsgrad": True, "weight_decay": WD}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "weight_decay": 8 * WD, "amsgrad": True}),
]
IDS = [f"{k}-" + "-".join(f"{a}={b}" for a, b in hp.items() if a != "lr") for k, hp in CONFIGS]
CLASSES = {"sgd": SGD, "momentum": Momentum, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def widen(a: np.ndarray) -> np.ndarray:
    """float64 values of a bfloat16 (either dtype) or float array."""
    a = np.asarray(a)
    if a.dtype.kind == "V":
        return (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def bf16(x) -> np.ndarray:
    return R.round_bfloat16(np.asarray(x, np.float64))


def ref_step(kind, hp, p, g, state, t, state_dtype):
    """One reference step of one tensor with bfloat16 parameter p: (param, {kind: state})."""
    kw = {"state_dtype": state_dtype}
    z = np.zeros(p.shape, BF16 if state_dtype == "bfloat16" else np.float32)
    if kind == "sgd":
        new_p, buf = R.sgd(p, g, state.get("momentum_buffer"), **hp, **kw)
        return new_p, {} if buf is None else {"momentum_buffer": buf}
    if kind == "momentum":
        new_p, v = R.momentum_course(p, g, state.get("velocity", z), **hp, **kw)
        return new_p, {"velocity": v}
    if kind == "rmsprop":
        new_p, sq, ga, buf = R.rmsprop(
            p, g, state.get("square_avg", z), state.get("grad_avg", z),
            state.get("momentum_buffer", z), **hp, **kw,
        )  # fmt: skip
        out = {"square_avg": sq, "grad_avg": ga, "momentum_buffer": buf}
        return new_p, {k: v for k, v in out.items() if v is not None}
    if kind == "adamw":
        hp = {"weight_decay": 1e-2, **hp}
    new_p, m, v, vmax = R.adam(
        p, g, state.get("exp_avg", z), state.get("exp_avg_sq", z),
        state.get("max_exp_avg_sq", z), t, decoupled=kind == "adamw", **hp, **kw,
    )  # fmt: skip
    out = {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": vmax}
    return new_p, {k: v for k, v in out.items() if v is not None}


def _order(a: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns as integers in value order (adjacent values differ by 1)."""
    b = np.asarray(a).view(np.uint16).astype(np.int64)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def assert_bf16_close(actual, reference, atol, ulps=1, err_msg=""):
    """Within ``ulps`` bfloat16 ulp of ``reference`` rounded, or within ``atol`` (elementwise):
    the error a cancellation leaves, which the small result's ulps cannot measure."""
    ref64 = widen(reference)
    d = np.abs(_order(actual) - _order(bf16(ref64)))
    ok = (d <= ulps) | (np.abs(widen(actual) - ref64) <= atol)
    if not ok.all():
        i = int(np.argmax(~ok))
        raise AssertionError(
            f"{int((~ok).sum())} of {ok.size} values off; worst at {i}: {widen(actual)[i]} vs "
            f"{ref64[i]} ({int(d[i])} ulp, atol {np.broadcast_to(atol, d.shape)[i]}) {err_msg}"
        )


def bf16_tensors(rng, sizes, scale=1.0):
    return [bf16(scale * rng.normal(size=n)) for n in sizes]


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(("kind", "hp"), CONFIGS, ids=IDS)
def test_against_reference_step_by_step(isa, rng, kind, hp, state_dtype):
    """Each step from the kernel's own parameter and state: the parameter within 1 bfloat16 ulp
    of the reference rounded once; float32 state within float32 rounding, bfloat16 state within
    1 ulp of the reference that rounds it too."""
    params = bf16_tensors(rng, SIZES)
    opt = CLASSES[kind](params, state_dtype=state_dtype, **hp)
    for t in range(1, 5):
        grads = bf16_tensors(rng, SIZES)
        expected = [
            ref_step(
                kind,
                hp,
                p.copy(),
                g,
                {k: v[i].copy() for k, v in opt.state.items()},
                t,
                state_dtype,
            )
            for i, (p, g) in enumerate(zip(params, grads))
        ]
        before = [p.copy() for p in params]
        old_state = {k: [a.copy() for a in v] for k, v in opt.state.items()}
        opt.step(grads)
        for i, (p, (ep, es)) in enumerate(zip(params, expected)):
            assert p.dtype == BF16
            p0 = widen(before[i])
            update = np.abs(widen(ep) - p0)
            # float32's error on p - update where they cancel; with bfloat16 state, also one
            # state ulp's worth of the update: state rounded at a tie (or within float32's error
            # of one) may land on the other neighbour in the kernel than in the reference.
            atol = 2.0**-20 * (np.abs(p0) + update)
            if state_dtype == "bfloat16":
                atol = atol + 2.0**-7 * update
            assert_bf16_close(p, ep, atol, err_msg=f"param {i} step {t}")
            assert set(opt.state) == set(es)
            for k, ev in es.items():
                got = opt.state[k][i]
                if state_dtype == "bfloat16":
                    assert got.dtype == BF16
                    old = widen(old_state[k][i]) if k in old_state else 0.0
                    # The same for a state computed from another state (RMSprop's buffer from
                    # the square average): one ulp's worth of this step's increment.
                    atol = 2.0**-7 * np.abs(widen(ev) - old) + 2.0**-20 * (np.abs(old) + 1)
                    assert_bf16_close(got, ev, atol, err_msg=f"{k} {i} step {t}")
                else:
                    assert got.dtype == np.float32
                    np.testing.assert_allclose(
                        got, ev, rtol=1e-5, atol=1e-6 * (np.abs(ev).max(initial=0) + 1),
                        err_msg=f"{k} {i} step {t}",
                    )  # fmt: skip


def test_bits_view_dtype_gives_the_same_bits(rng):
    """bnfast's bits view [("bfloat16", "<u2")] (bnfast.torch's) is the same storage."""
    for state_dtype in ("float32", "bfloat16"):
        a = bf16_tensors(rng, [5, 300])
        b = [x.copy().view(BFLOAT16_BITS) for x in a]
        grads = bf16_tensors(rng, [5, 300])
        oa = Adam(a, 0.01, state_dtype=state_dtype, amsgrad=True)
        ob = Adam(b, 0.01, state_dtype=state_dtype, amsgrad=True)
        for _ in range(3):
            oa.step(grads)
            ob.step([g.view(BFLOAT16_BITS) for g in grads])
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.view(np.uint16), y.view(np.uint16))
        assert ob.state["exp_avg"][0].dtype == (
            BFLOAT16_BITS if state_dtype == "bfloat16" else np.float32
        )


# ---- mixed lists ------------------------------------------------------------------------


def _state_lists(kind, params, dtypes):
    n = {"sgd": 1, "momentum": 1, "rmsprop": 3, "adam": 3}[kind]
    return [[np.zeros(p.shape, d) for p, d in zip(params, dtypes)] for _ in range(n)]


def _call(kind, params, grads, s, copies=None, **kw):
    if copies is not None:
        kw["params_bf16"] = copies
    if kind == "sgd":
        _core.sgd_update(params, grads, s[0], 0.1, 0.9, 0.0, 0.01, True, False, **kw)
    elif kind == "momentum":
        _core.momentum_update(params, grads, s[0], 0.1, 0.9, **kw)
    elif kind == "rmsprop":
        _core.rmsprop_update(params, grads, *s, 0.01, 0.9, 1e-8, 0.01, 0.5, True, **kw)
    else:
        _core.adam_update(params, grads, *s, 3, 0.01, 0.9, 0.99, 1e-8, 0.01, True, True, **kw)


@pytest.mark.parametrize("kind", ["sgd", "momentum", "rmsprop", "adam"])
def test_mixed_list_one_call_equals_separate_calls(isa, rng, kind):
    # (param dtype, grad dtype, state dtype, master copy): every combination the kernels have.
    combos = [
        (BF16, BF16, np.float32, False),
        (np.float32, np.float32, np.float32, False),
        (BF16, BF16, BF16, False),
        (np.float64, np.float64, np.float64, False),
        (np.float32, BF16, np.float32, True),
        (np.float32, np.float32, np.float32, True),
        (BF16, BF16, BF16, False),
    ]
    sizes = [17, 0, 9000, 33, 257, 5, 0]
    p0 = [bf16(rng.normal(size=n)).astype(c[0]) for n, c in zip(sizes, combos)]
    g0 = [bf16(rng.normal(size=n)).astype(c[1]) for n, c in zip(sizes, combos)]
    s0 = [rng.random(size=n).astype(c[2]) for n, c in zip(sizes, combos)]  # state >= 0

    def fresh():
        p = [x.copy() for x in p0]
        s = _state_lists(kind, p, [c[2] for c in combos])
        for lst in s:
            for a, b in zip(lst, s0):
                a[...] = b
        c = [np.zeros(x.shape, BF16) if cb[3] else None for x, cb in zip(p, combos)]
        return p, s, c

    pa, sa, ca = fresh()
    _call(kind, pa, g0, sa, ca)
    pb, sb, cb = fresh()
    for i in range(len(sizes)):
        _call(kind, [pb[i]], [g0[i]], [lst[i : i + 1] for lst in sb], [cb[i]])
    for x, y in zip(pa + [a for lst in sa for a in lst], pb + [a for lst in sb for a in lst]):
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))
    for i, (x, y) in enumerate(zip(ca, cb)):
        if x is not None:
            np.testing.assert_array_equal(x.view(np.uint16), y.view(np.uint16))
            # The copy is the updated float32 parameter rounded to nearest even.
            np.testing.assert_array_equal(x.view(np.uint16), bf16(pa[i]).view(np.uint16))


# ---- stochastic rounding ----------------------------------------------------------------


def test_stochastic_rounding_bits_are_the_documented_hash(isa):
    """SGD with lr 1 computes p - g exactly in float32; the kernel then rounds with the bits of
    bnfast.reference.stochastic_bits (seed, step, position in the list, element)."""
    rng = np.random.default_rng(7)
    sizes = [20000, 3, 0, 4099]
    params = [bf16(rng.uniform(1, 2, size=n)) for n in sizes]
    grads = [bf16(rng.uniform(-0.01, 0.01, size=n)) for n in sizes]
    # Infinities, NaN and subnormals round as to nearest (subnormals to signed zero).
    params[1][:] = bf16([np.inf, np.nan, 0.0])
    params[1].view(np.uint16)[2] = 0x8001  # the negative bfloat16 subnormal closest to 0
    grads[1][:] = 0
    exact = [(widen(p) - widen(g)).astype(np.float32) for p, g in zip(params, grads)]
    seed, step = 2**63 + 12345, 17
    _core.sgd_update(
        params, grads, None, 1.0, 0.0, 0.0, 0.0, False, False,
        stochastic_rounding=True, seed=seed, step=step,
    )  # fmt: skip
    for i, (p, x) in enumerate(zip(params, exact)):
        e = R.round_bfloat16_stochastic(x, R.stochastic_bits(seed, step, i, x.size))
        np.testing.assert_array_equal(p.view(np.uint16), e.view(np.uint16))
    assert any(
        not np.array_equal(p.view(np.uint16), bf16(x).view(np.uint16))
        for p, x in zip(params, exact)
    ), "stochastic rounding never differed from nearest"


def _sr_run(kind, seed, sizes, steps=3, state_dtype="float32"):
    rng = np.random.default_rng(3)
    params = bf16_tensors(rng, sizes)
    grads = [bf16_tensors(rng, sizes, 0.1) for _ in range(steps)]
    hp = {"lr": 0.01} if kind != "sgd" else {"lr": 0.01, "momentum": 0.9, "nesterov": True}
    opt = CLASSES[kind](params, stochastic_rounding=True, seed=seed, state_dtype=state_dtype, **hp)
    for g in grads:
        opt.step(g)
    return [p.view(np.uint16).copy() for p in params]


@pytest.mark.parametrize("kind", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
def test_stochastic_rounding_is_reproducible_and_seeded(kind):
    sizes = [100, 0, 3000]
    a, b, c = _sr_run(kind, 1, sizes), _sr_run(kind, 1, sizes), _sr_run(kind, 2, sizes)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", ["sgd", "rmsprop", "adam"])
def test_stochastic_rounding_same_bits_on_every_isa_and_thread_count(threads, kind, state_dtype):
    sizes = [300_000, 5, 70_000]
    results = []
    for isa_name in bnfast.available_isas():
        with bnfast.use_isa(isa_name):
            for n in (1, 2):
                bnfast.set_num_threads(n)
                results.append((isa_name, n, _sr_run(kind, 99, sizes, 2, state_dtype)))
    for isa_name, n, r in results[1:]:
        for x, y in zip(results[0][2], r):
            np.testing.assert_array_equal(x, y, err_msg=f"{isa_name} with {n} threads")


def test_stochastic_rounding_is_unbiased():
    """Many roundings of one value between two bfloat16 numbers (one element each, so each has
    its own random bits): their mean is the value, within 5 standard errors."""
    n = 200_000
    ulp = 2.0**-7  # bfloat16's spacing in [1, 2)
    for frac in (0.3, 0.5, 0.9):
        p = np.full(n, bf16(1.0), BF16)
        g = np.full(n, bf16(-frac * ulp), BF16)
        x = 1.0 + widen(g[:1])[0] * -1  # exact in float32
        _core.sgd_update([p], [g], None, 1.0, 0.0, 0.0, 0.0, False, False,
                         stochastic_rounding=True, seed=5, step=1)  # fmt: skip
        v = widen(p)
        assert set(np.unique(v)) <= {1.0, 1.0 + ulp}
        f = (x - 1.0) / ulp
        sigma = ulp * np.sqrt(f * (1 - f) / n)
        assert abs(v.mean() - x) < 5 * sigma, (frac, v.mean(), x, sigma)


def test_stochastic_rounding_keeps_tiny_updates_nearest_loses():
    """1000 steps of 1e-4 from 1.0: each is far below half a bfloat16 ulp (2^-9 below 1), so
    round-to-nearest never moves; stochastic rounding travels the whole 0.1 in expectation."""
    n, steps, lr = 4096, 1000, 1e-4
    p_rne = np.full(n, bf16(1.0), BF16)
    p_sr = p_rne.copy()
    g = np.ones(n, BF16)
    rne, sr = SGD([p_rne], lr), SGD([p_sr], lr, stochastic_rounding=True, seed=11)
    for _ in range(steps):
        rne.step([g])
        sr.step([g])
    assert np.all(widen(p_rne) == 1.0)
    assert abs(widen(p_sr).mean() - (1.0 - steps * lr)) < 0.005
    # With float32 master weights the updates are kept too, deterministically.
    p_mw = np.full(n, bf16(1.0), BF16)
    mw = SGD([p_mw], lr, master_weights=True)
    for _ in range(steps):
        mw.step([g])
    assert np.all(np.abs(widen(p_mw) - 0.9) <= 2.0**-9)


# ---- master weights ---------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "hp"), CONFIGS, ids=IDS)
def test_master_weights_equal_float32_training_rounded(isa, rng, kind, hp):
    sizes = [0, 17, 9000]
    p_bf = bf16_tensors(rng, sizes)
    p_f32 = [widen(p).astype(np.float32) for p in p_bf]
    a = CLASSES[kind](p_bf, master_weights=True, **hp)
    b = CLASSES[kind](p_f32, **hp)
    for _ in range(3):
        grads = bf16_tensors(rng, sizes)
        a.step(grads)
        b.step([widen(g).astype(np.float32) for g in grads])
        for x, m, y in zip(p_bf, a.state["master_weight"], p_f32):
            np.testing.assert_array_equal(m, y)
            np.testing.assert_array_equal(x.view(np.uint16), bf16(y).view(np.uint16))
    for k in b.state:
        for x, y in zip(a.state[k], b.state[k]):
            np.testing.assert_array_equal(x, y)


def test_master_weights_checkpoint_resumes_bit_for_bit(rng):
    sizes = [5, 300]
    p = bf16_tensors(rng, sizes)
    grads = [bf16_tensors(rng, sizes) for _ in range(4)]
    opt = Adam(p, 0.01, master_weights=True)
    opt.step(grads[0])
    sd, saved = opt.state_dict(), [x.copy() for x in p]
    for g in grads[1:]:
        opt.step(g)
    q = [x.copy() for x in saved]
    opt2 = Adam(q, 0.01, master_weights=True)
    opt2.load_state_dict(sd)
    for g in grads[1:]:
        opt2.step(g)
    for x, y in zip(p, q):
        np.testing.assert_array_equal(x.view(np.uint16), y.view(np.uint16))


def test_option_conflicts_are_refused():
    p = [np.zeros(3, BF16)]
    with pytest.raises(ValueError, match="alternatives"):
        SGD(p, master_weights=True, stochastic_rounding=True)
    with pytest.raises(ValueError, match="state_dtype"):
        Adam(p, state_dtype="float16")
    with pytest.raises(ValueError, match="seed"):
        Adam(p, seed=-1)


# ---- clipping ---------------------------------------------------------------------------


def test_clip_grad_norm_bfloat16(isa, rng):
    sizes = [0, 7, 20000, 33]
    grads = bf16_tensors(rng, sizes, 3.0)
    mixed = [*grads, rng.normal(size=50).astype(np.float32)]
    expected, total = R.clip_grad_norm([g.copy() for g in mixed], 1.0)
    assert global_norm(mixed) == pytest.approx(total, rel=1e-6)
    got = clip_grad_norm(mixed, 1.0)
    assert got == pytest.approx(total, rel=1e-6)
    for g, e in zip(mixed, expected):
        if g.dtype == BF16:
            assert_bfloat16_within(g, widen(e), 1)
        else:
            np.testing.assert_allclose(g, e, rtol=1e-6)


def test_clip_grad_norm_bfloat16_deterministic_across_threads(threads, rng):
    grads0 = bf16_tensors(rng, [300_000, 5, 70_000], 3.0)
    out = []
    for n in (1, 2):
        bnfast.set_num_threads(n)
        g = [x.copy() for x in grads0]
        out.append((clip_grad_norm(g, 1.0), g))
    assert out[0][0] == out[1][0]
    for x, y in zip(out[0][1], out[1][1]):
        np.testing.assert_array_equal(x.view(np.uint16), y.view(np.uint16))


# ---- refused inputs ---------------------------------------------------------------------


def _snapshot(*lists):
    return [a.view(np.uint8).copy() for lst in lists if lst is not None for a in lst]


@pytest.mark.parametrize(
    ("case", "name"),
    [
        ("f32_grad_for_bf16", r"grads\[1\]"),
        ("f64_state_for_bf16", r"exp_avg\[1\]"),
        ("mixed_state_for_bf16", r"exp_avg_sq\[1\]"),
        ("bf16_grad_for_f64", r"grads\[1\]"),
        ("bf16_state_for_f32", r"exp_avg\[1\]"),
        ("copy_for_bf16", r"params_bf16\[1\]"),
        ("f32_copy", r"params_bf16\[0\]"),
        ("f16_param", r"params\[1\]"),
    ],
)
def test_unsupported_mix_is_a_type_error_naming_the_argument(rng, case, name):
    p = [bf16(rng.normal(size=4)).astype(np.float32), bf16(rng.normal(size=6))]
    g = [bf16(rng.normal(size=4)).astype(np.float32), bf16(rng.normal(size=6))]
    m = [np.zeros(4, np.float32), np.zeros(6, np.float32)]
    v = [np.zeros(4, np.float32), np.zeros(6, np.float32)]
    copies = None
    if case == "f32_grad_for_bf16":
        g[1] = g[1].astype(np.float32)
    elif case == "f64_state_for_bf16":
        m[1] = m[1].astype(np.float64)
    elif case == "mixed_state_for_bf16":
        m[1] = m[1].astype(BF16)
    elif case == "bf16_grad_for_f64":
        p[1], m[1], v[1] = (x.astype(np.float64) for x in (p[1], m[1], v[1]))
    elif case == "bf16_state_for_f32":
        g[0] = g[0].astype(BF16)
        p[1], g[1] = p[1].astype(np.float32), g[1].astype(np.float32)
        m[1] = m[1].astype(BF16)
    elif case == "copy_for_bf16":
        copies = [None, np.zeros(6, BF16)]
    elif case == "f32_copy":
        copies = [np.zeros(4, np.float32), None]
    elif case == "f16_param":
        p[1] = p[1].astype(np.float16)
    before = _snapshot(p, g, m, v, [c for c in copies or [] if c is not None])
    with pytest.raises(TypeError, match=name):
        _core.adam_update(p, g, m, v, None, 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False, False,
                          params_bf16=copies, stochastic_rounding=True)  # fmt: skip
    after = _snapshot(p, g, m, v, [c for c in copies or [] if c is not None])
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def test_optimizer_refuses_float32_grads_for_bfloat16_params_and_keeps_state(rng):
    p = [bf16(rng.normal(size=5))]
    before = p[0].copy()
    opt = Adam(p, 0.1)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step([np.ones(5, np.float32)])
    np.testing.assert_array_equal(p[0].view(np.uint16), before.view(np.uint16))
    assert opt.state == {} and opt.steps == 0


# ---- PyTorch ----------------------------------------------------------------------------


def _torch_bf16_to_numpy(t):
    import torch

    return t.detach().view(torch.int16).numpy().view(np.uint16).view(BF16).copy()


def _numpy_bf16_to_torch(a):
    import torch

    return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)


@pytest.mark.parametrize(
    ("kind", "hp", "rel"),
    [
        ("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}, 2.0**-6),
        ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, 2.0**-6),
        ("adam", {"lr": 0.01, "weight_decay": 0.01}, 2.0**-6),
        ("adam", {"lr": 0.01, "amsgrad": True}, 2.0**-6),
        ("adamw", {"lr": 0.01, "weight_decay": 0.1}, 2.0**-6),
        # PyTorch rounds s - m^2 (a cancellation), its square root and the buffer's two
        # operations to bfloat16 separately: its update is a few bfloat16 ulp off.
        ("rmsprop", {"lr": 0.01, "momentum": 0.5, "centered": True}, 2.0**-4),
    ],
)
def test_matches_pytorch_on_bfloat16_params(isa, kind, hp, rel):
    """PyTorch keeps bfloat16 state for bfloat16 parameters and rounds each operation's result
    to bfloat16 (g + wd * p, the nesterov sum, the denominators); bnfast with
    state_dtype="bfloat16" rounds only the state and the parameter. Each step from the same
    parameter: within 2 bfloat16 ulp, or, where p - update cancels, within 2 ulp of the update
    (PyTorch's rounded intermediates are that far apart from the float32 ones)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    tp = [torch.randn(n, generator=gen).to(torch.bfloat16) for n in (7, 300)]
    grads = [[torch.randn(n, generator=gen).to(torch.bfloat16) for n in (7, 300)]
             for _ in range(4)]  # fmt: skip
    ours = [_torch_bf16_to_numpy(t) for t in tp]
    tparams = [torch.nn.Parameter(t.clone()) for t in tp]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop}[kind]  # fmt: skip
    topt = cls(tparams, foreach=False, **hp)
    opt = CLASSES[kind](ours, state_dtype="bfloat16", **hp)
    for t, gs in enumerate(grads, 1):
        for p, g in zip(tparams, gs):
            p.grad = g.clone()
        before = [widen(p) for p in ours]
        topt.step()
        opt.step([_torch_bf16_to_numpy(g) for g in gs])
        for p, q, p0 in zip(ours, tparams, before):
            theirs = widen(_torch_bf16_to_numpy(q))
            atol = rel * np.abs(theirs - p0)
            assert_bf16_close(p, theirs, atol, ulps=2, err_msg=f"step {t}")
        # Continue both from the same parameter and state, so that differences do not compound
        # (the state kinds have PyTorch's names).
        with torch.no_grad():
            for i, q in enumerate(tparams):
                q.copy_(_numpy_bf16_to_torch(ours[i]))
                for k, v in opt.state.items():
                    topt.state[q][k].copy_(_numpy_bf16_to_torch(v[i]))


def test_reference_adam_backend_takes_bfloat16(rng):
    from bnfast.optim.numpy_backend import ReferenceAdam

    p = bf16_tensors(rng, [5, 40])
    q = [x.copy() for x in p]
    grads = bf16_tensors(rng, [5, 40])
    ref, native = ReferenceAdam(p, lr=0.01), Adam(q, 0.01)
    assert ref.exp_avg[0].dtype == np.float32
    for _ in range(2):
        ref.step(grads)
        native.step(grads)
    for x, y in zip(q, p):
        assert_bfloat16_within(x, widen(y), 1)
