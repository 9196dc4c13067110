"""Reliability of every kernel binding: threads, the GIL, fork, leaks, 64-bit sizes, pickling.

``CASES`` runs every _core kernel binding once through the public API (or _core directly where
no public function wraps it) on inputs large enough to run multithreaded, with sizes that do
not divide evenly into vectors, work units or threads. The tests here compare those results
bitwise across thread counts, concurrent Python threads, set_num_threads calls during the runs,
and a forked child; the per-family tests check them against the reference.
"""

from __future__ import annotations

import copy
import gc
import multiprocessing
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import bnfast
from bnfast import _core, nn
from bnfast.optim import SGD, Adam, AdamW, Momentum, RMSprop, clip_grad_norm, global_norm

SANITIZED = bool(os.environ.get("BNFAST_SANITIZED"))

Case = Callable[[], list]


def make_cases(dtype, scale: int = 1) -> dict[str, Case]:
    """Every kernel binding, each as a call that returns its outputs (fresh copies).

    ``scale`` multiplies the row counts (1: ~0.5 MB per array, over the parallel threshold).
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(7)
    rows, k = 513 * scale, 257  # rows: no divisor of 8, 16, 48 groups or 2/3 threads
    x = rng.standard_normal((rows, k)).astype(dtype)
    dy = rng.standard_normal((rows, k)).astype(dtype)
    x4 = rng.standard_normal((3 * scale, 33, 29, 31)).astype(dtype)  # planes of 899 values
    dy4 = rng.standard_normal(x4.shape).astype(dtype)
    w, b = rng.uniform(0.5, 2, k).astype(dtype), rng.standard_normal(k).astype(dtype)
    w4 = rng.uniform(0.5, 2, 33).astype(dtype)
    labels = rng.integers(0, k, rows)
    labels[::17] = -100
    labels4 = rng.integers(0, 33, (3 * scale, 29, 31))
    probs = bnfast.softmax(rng.standard_normal((rows, k)).astype(dtype))
    cls_w = rng.uniform(0.5, 2, k).astype(dtype)
    bin_t = (rng.random((rows, k)) < 0.3).astype(dtype)
    y_sm = bnfast.softmax(x)
    y_lsm = bnfast.log_softmax(x)
    _, mean, invstd = bnfast.batch_norm(x, training=True)
    _, mean4, invstd4 = bnfast.batch_norm(x4, training=True)
    params = [rng.standard_normal(n).astype(dtype) for n in (100_003, 7, 77_777)]
    grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
    pos = np.abs(x) + 0.5

    def bn_train(xx, ww, bb):
        rm, rv = np.zeros(xx.shape[1], dtype), np.ones(xx.shape[1], dtype)
        return [*bnfast.batch_norm(xx, rm, rv, ww, bb, training=True), rm, rv]

    def optimizer(cls, **hp):
        def run():
            ps = [p.copy() for p in params]
            opt = cls(ps, **hp)
            for _ in range(2):
                opt.step(grads)
            return ps + [a for v in opt.state.values() for a in v]

        return run

    def clip():
        gs = [g.copy() for g in grads]
        return [np.float64(clip_grad_norm(gs, 1.0)), *gs]

    return {
        "batch_norm_train_rows": lambda: bn_train(x, w, b),
        "batch_norm_train_planes": lambda: bn_train(x4, w4, None),
        "batch_norm_eval": lambda: list(bnfast.batch_norm(x, mean, 1 / invstd**2, w, b)),
        "batch_norm_eval_planes": lambda: list(bnfast.batch_norm(x4, mean4, 1 / invstd4**2)),
        "batch_norm_backward_rows": lambda: list(
            bnfast.batch_norm_backward(dy, x, mean, invstd, w)
        ),
        "batch_norm_backward_planes": lambda: list(
            bnfast.batch_norm_backward(dy4, x4, mean4, invstd4)
        ),
        "batch_norm_backward_eval": lambda: list(
            bnfast.batch_norm_backward(dy, x, mean, invstd, w, training=False)
        ),
        "softmax": lambda: [bnfast.softmax(x)],
        "softmax_axis0": lambda: [bnfast.softmax(x4, axis=1)],
        "log_softmax": lambda: [bnfast.log_softmax(x)],
        "softmax_backward": lambda: [bnfast.softmax_backward(y_sm, dy)],
        "log_softmax_backward": lambda: [bnfast.log_softmax_backward(y_lsm, dy, axis=-1)],
        "softmax_cross_entropy_classes": lambda: list(
            bnfast.softmax_cross_entropy(x, labels, cls_w)
        ),
        "softmax_cross_entropy_classes_none": lambda: list(
            bnfast.softmax_cross_entropy(x, labels, reduction="none", label_smoothing=0.1)
        ),
        "softmax_cross_entropy_probs": lambda: list(
            bnfast.softmax_cross_entropy(x, probs, reduction="sum")
        ),
        "softmax_cross_entropy_nchw": lambda: list(bnfast.softmax_cross_entropy(x4, labels4)),
        "sigmoid_binary_cross_entropy": lambda: list(
            bnfast.sigmoid_binary_cross_entropy(x, bin_t, pos_weight=w)
        ),
        "sigmoid_binary_cross_entropy_weight_none": lambda: list(
            bnfast.sigmoid_binary_cross_entropy(x, bin_t, weight=x, reduction="none")
        ),
        "sgd": optimizer(SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        "momentum": optimizer(Momentum, lr=0.1, beta=0.9),
        "rmsprop": optimizer(RMSprop, lr=0.01, centered=True, momentum=0.5, weight_decay=0.1),
        "adam": optimizer(Adam, lr=0.01, amsgrad=True, weight_decay=0.01),
        "adamw": optimizer(AdamW, lr=0.01, weight_decay=0.1),
        "clip_grad_norm": clip,
        "global_norm": lambda: [np.float64(global_norm(grads))],
        "vmath_exp": lambda: [_core.vmath_exp(x)],
        "vmath_log": lambda: [_core.vmath_log(pos)],
    }


CASE_NAMES = list(make_cases(np.float32))


def same(a: list, b: list) -> bool:
    """Bitwise equality of two lists of arrays (NaNs included)."""
    return len(a) == len(b) and all(
        np.asarray(u).dtype == np.asarray(v).dtype
        and np.asarray(u).shape == np.asarray(v).shape
        and np.asarray(u).tobytes() == np.asarray(v).tobytes()
        for u, v in zip(a, b)
    )


@pytest.fixture(scope="module")
def cases32():
    return make_cases(np.float32)


@pytest.fixture(scope="module")
def cases64():
    return make_cases(np.float64)


@pytest.fixture
def cases(dtype, cases32, cases64):
    return cases32 if dtype == np.float32 else cases64


# ---- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bitwise_identical_for_1_2_3_threads(isa, threads, dtype, cases, name):
    results = []
    for n in (1, 2, 3):
        bnfast.set_num_threads(n)
        results.append(cases[name]())
    assert same(results[0], results[1]), "2 threads differ from 1"
    assert same(results[0], results[2]), "3 threads differ from 1"


# ---- threads -------------------------------------------------------------------------------


def test_concurrent_python_threads_give_correct_results(threads, cases32, cases64):
    """Every kernel from 4 Python threads at once (each with its OpenMP team) on its own data."""
    bnfast.set_num_threads(2)
    jobs = [(c, name) for c in (cases32, cases64) for name in CASE_NAMES]
    expected = {(id(c), name): c[name]() for c, name in jobs}

    def run(job):
        c, name = job
        return all(same(c[name](), expected[id(c), name]) for _ in range(2))

    with ThreadPoolExecutor(4) as pool:
        ok = list(pool.map(run, jobs * 2))
    assert all(ok), [name for (c, name), good in zip(jobs * 2, ok) if not good]


def test_set_num_threads_while_kernels_run(threads, cases32):
    expected = {name: cases32[name]() for name in CASE_NAMES}
    stop = threading.Event()

    def toggle():
        n = 0
        while not stop.is_set():
            bnfast.set_num_threads(1 + n % 3)
            n += 1
            time.sleep(0.0005)

    def run(name):
        return same(cases32[name](), expected[name])

    toggler = threading.Thread(target=toggle)
    toggler.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            ok = list(pool.map(run, CASE_NAMES * 2))
    finally:
        stop.set()
        toggler.join()
    assert all(ok), [n for n, good in zip(CASE_NAMES * 2, ok) if not good]


def _big(dtype=np.float64, n=1 << 22):
    return np.random.default_rng(0).standard_normal((n // 512, 512)).astype(dtype)


# One long call per kernel family; each must let another Python thread run meanwhile.
GIL_CALLS: dict[str, Callable[[np.ndarray], object]] = {
    "batch_norm": lambda x: bnfast.batch_norm(x, training=True),
    "batch_norm_backward": lambda x: bnfast.batch_norm_backward(
        x, x, np.zeros(512), np.ones(512), out=np.empty_like(x)
    ),
    "softmax": lambda x: bnfast.softmax(x),
    "softmax_backward": lambda x: bnfast.softmax_backward(x, x),
    "softmax_cross_entropy": lambda x: bnfast.softmax_cross_entropy(x, np.zeros(len(x), int)),
    "sigmoid_binary_cross_entropy": lambda x: bnfast.sigmoid_binary_cross_entropy(x, x),
    "adam": lambda x: Adam([x.copy()], lr=0.1).step([x]),
    "global_norm": lambda x: global_norm([x] * 8),  # one call, 8 passes over x
    "vmath_exp": lambda x: _core.vmath_exp(x),
}


@pytest.mark.parametrize("name", list(GIL_CALLS))
def test_gil_released_during_kernels(threads, name):
    """A counter thread stamps times while a long kernel call runs in another thread; with the
    GIL held during the call no stamp could fall in the middle of it."""
    bnfast.set_num_threads(1)
    x = _big()
    call = GIL_CALLS[name]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        for _attempt in range(3):
            stamps: list[float] = []
            stop = threading.Event()
            window: list[float] = []

            def counter(stamps=stamps, stop=stop):
                while not stop.is_set():
                    stamps.append(time.perf_counter())

            def kernel(window=window):
                t0 = time.perf_counter()
                call(x)
                window.extend([t0, time.perf_counter()])

            tc = threading.Thread(target=counter)
            tc.start()
            tk = threading.Thread(target=kernel)
            tk.start()
            tk.join()
            stop.set()
            tc.join()
            t0, t1 = window
            d = t1 - t0
            if d < 5e-3:
                continue  # too short to tell: try again (the machine may be idle and fast)
            inside = [s for s in stamps if t0 + 0.25 * d < s < t1 - 0.25 * d]
            if inside:
                return
        pytest.fail(f"{name}: no other Python thread ran during the kernel call (GIL held?)")
    finally:
        sys.setswitchinterval(old)


# ---- fork ----------------------------------------------------------------------------------


def _child_results(dtype):
    return {name: [np.asarray(a) for a in fn()] for name, fn in make_cases(dtype).items()}


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="no fork start method"
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() with threads alive
def test_fork_pool_after_threaded_kernels(threads, cases32):
    """libgomp cannot start threads in a child forked after a parallel region (the child hangs);
    bnfast runs such a child's kernels on one thread, with the same (bitwise) results."""
    bnfast.set_num_threads(2)
    expected = {name: cases32[name]() for name in CASE_NAMES}  # threaded kernels in the parent
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        results = pool.map_async(_child_results, [np.float32, np.float32]).get(timeout=120)
        threads_in_child = pool.apply_async(bnfast.get_num_threads).get(timeout=60)
    finally:
        pool.terminate()
        pool.join()
    for res in results:
        bad = [n for n in CASE_NAMES if not same(res[n], expected[n])]
        assert not bad, bad
    assert threads_in_child == 1
    assert bnfast.get_num_threads() == 2  # the parent keeps its threads


# ---- leaks ---------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _leak_calls(dtype=np.float32):
    """(name, call, arrays whose reference counts must not change) for every binding, small
    inputs; some calls raise (the error paths must not leak either)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5)).astype(dtype)
    dy = rng.standard_normal((4, 5)).astype(dtype)
    w = np.ones(5, dtype)
    rm, rv = np.zeros(5, dtype), np.ones(5, dtype)
    mean, invstd = np.zeros(5, dtype), np.ones(5, dtype)
    out = np.empty_like(x)
    t = np.array([0, 1, 2, 4])
    p, g = [rng.standard_normal(7).astype(dtype)], [rng.standard_normal(7).astype(dtype)]
    s1, s2, s3 = [np.zeros(7, dtype)], [np.zeros(7, dtype)], [np.zeros(7, dtype)]
    ints = np.zeros((4, 5), np.int32)
    go = np.full(4, 0.5, dtype)

    def raises(fn):
        def call():
            try:
                fn()
            except (TypeError, ValueError, IndexError):
                pass
            else:
                raise AssertionError("expected an exception")

        return call

    keep = (x, dy, w, rm, rv, mean, invstd, out, t, p[0], g[0], s1[0], s2[0], s3[0], ints, go)
    calls = {
        "batch_norm_train": lambda: _core.batch_norm_train(x, 1, w, w, rm, rv, 0.1, 1e-5, out),
        "batch_norm_eval": lambda: _core.batch_norm_eval(x, 1, w, None, rm, rv, 1e-5, None),
        "batch_norm_backward": lambda: _core.batch_norm_backward(
            dy, x, 1, mean, invstd, w, True, None
        ),
        "batch_norm_bad": raises(
            lambda: _core.batch_norm_train(ints, 1, w, w, rm, rv, 0.1, 1e-5, None)
        ),
        "batch_norm_bad_out": raises(lambda: _core.batch_norm_eval(x, 1, w, None, rm, rv, 1e-5, w)),
        "softmax": lambda: _core.softmax(x, -1, out),
        "log_softmax_bad": raises(lambda: _core.log_softmax(x, 5, None)),
        "log_softmax_backward": lambda: _core.log_softmax_backward(x, dy, -1, None),
        "softmax_cross_entropy": lambda: _core.softmax_cross_entropy(
            x, t, 1, w, -100, "mean", 0.1, None, None
        ),
        "softmax_cross_entropy_none": lambda: _core.softmax_cross_entropy(
            x, t, 1, None, -100, "none", 0.0, go, None
        ),
        "softmax_cross_entropy_bad": raises(
            lambda: _core.softmax_cross_entropy(x, t + 9, 1, None, -100, "mean", 0.0, None, None)
        ),
        "sigmoid_binary_cross_entropy": lambda: _core.sigmoid_binary_cross_entropy(
            x, dy, w, w, "mean", 2.0, None
        ),
        "sigmoid_binary_cross_entropy_bad": raises(
            lambda: _core.sigmoid_binary_cross_entropy(x, ints, None, None, "mean", None, None)
        ),
        "sgd": lambda: _core.sgd_update(p, g, s1, 0.1, 0.9, 0.0, 0.0, False, False),
        "momentum": lambda: _core.momentum_update(p, g, s1, 0.1, 0.9),
        "rmsprop": lambda: _core.rmsprop_update(p, g, s1, s2, s3, 0.1, 0.9, 1e-8, 0.0, 0.5, True),
        "adam": lambda: _core.adam_update(p, g, s1, s2, s3, 3, 0.1, 0.9, 0.99, 1e-8, 0, True, True),
        "adam_bad": raises(
            lambda: _core.adam_update(p, g, s1, s1, None, 3, 0.1, 0.9, 0.99, 1e-8, 0, False, True)
        ),
        "clip": lambda: _core.clip_grad_norm(s1, 1.0, False),
        "global_norm": lambda: _core.global_norm(g),
        "global_norm_bad": raises(lambda: _core.global_norm([ints])),
        "vmath": lambda: (_core.vmath_exp(x), _core.vmath_log(np.abs(x))),
        "public": lambda: (
            bnfast.batch_norm(x, training=True),
            bnfast.softmax_cross_entropy(x, t, reduction="none"),
            bnfast.sigmoid_binary_cross_entropy(x, dy, pos_weight=w),
        ),
    }
    return calls, keep


def _check_flat(n_calls: int, rss_slack: int):
    calls, keep = _leak_calls()
    gc.collect()
    for fn in calls.values():  # warm up: caches, lazily created objects, allocator pools
        for _ in range(200):
            fn()
    gc.collect()
    refs = [sys.getrefcount(a) for a in keep]
    rss0 = _rss_bytes()
    for name, fn in calls.items():
        for _ in range(n_calls):
            fn()
        gc.collect()
        assert [sys.getrefcount(a) for a in keep] == refs, f"{name} changed reference counts"
    grown = _rss_bytes() - rss0
    if not SANITIZED:  # ASan quarantines freed memory: RSS grows by design
        assert grown < rss_slack, f"RSS grew by {grown / 2**20:.1f} MiB over {n_calls} calls each"
    # Outputs hold exactly one reference (the caller's).
    y, _, _ = _core.batch_norm_eval(keep[0], 1, None, None, keep[3], keep[4], 1e-5, None)
    loss, grad = _core.softmax_cross_entropy(
        keep[0], keep[8], 1, None, -100, "mean", 0.0, None, None
    )
    assert sys.getrefcount(y) == sys.getrefcount(loss) == sys.getrefcount(grad) == 2


def test_no_leaks_short():
    _check_flat(2000, 4 << 20)


@pytest.mark.slow
def test_no_leaks_1e5_calls():
    _check_flat(100_000, 4 << 20)


# ---- 64-bit sizes --------------------------------------------------------------------------

HUGE = (1 << 31) + 1000  # elements: past every 32-bit index


def huge_view(dtype=np.float32, shape=(HUGE,)):
    """A read-only broadcast view of > 2^31 elements that costs no memory (zero strides)."""
    return np.broadcast_to(np.ones((), dtype), shape)


HUGE_CALLS: dict[str, Callable[[np.ndarray], object]] = {
    "batch_norm": lambda v: bnfast.batch_norm(v, training=True, axis=-1),
    "batch_norm_backward": lambda v: bnfast.batch_norm_backward(v, v, np.zeros(1), np.ones(1)),
    "softmax": lambda v: bnfast.softmax(v),
    "log_softmax": lambda v: bnfast.log_softmax(v),
    "softmax_backward": lambda v: bnfast.softmax_backward(v, v),
    "log_softmax_backward": lambda v: bnfast.log_softmax_backward(v, v),
    "softmax_cross_entropy": lambda v: bnfast.softmax_cross_entropy(v, 0, axis=0),
    "sigmoid_binary_cross_entropy": lambda v: bnfast.sigmoid_binary_cross_entropy(v, v),
    "global_norm": lambda v: global_norm([v]),
    "clip_grad_norm": lambda v: clip_grad_norm([v], 1.0),
    "optimizer_grads": lambda v: SGD([np.zeros(v.shape[-1:], v.dtype)], lr=0.1).step([v]),
}


@pytest.mark.parametrize("name", list(HUGE_CALLS))
@pytest.mark.parametrize("shape", [(HUGE,), (1 << 16, (1 << 15) + 3)], ids=["1d", "2d"])
def test_huge_broadcast_views_refused_before_any_copy(name, shape):
    """A > 2^31-element zero-stride view: refused with a clear error, without allocating."""
    if name == "optimizer_grads" and len(shape) == 1:
        pytest.skip("a parameter of the view's shape would allocate")
    v = huge_view(np.float32, shape)
    rss0 = _rss_bytes()
    with pytest.raises(ValueError, match=r"broadcast view|C-contiguous|read-only"):
        HUGE_CALLS[name](v)
    assert _rss_bytes() - rss0 < 64 << 20


def test_huge_views_refused_by_core():
    """_core itself never copies: non-contiguous or read-only views are refused."""
    v = huge_view()
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.softmax(v[::2], -1, None)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.clip_grad_norm([v], 1.0, False)
    with pytest.raises(ValueError, match="read-only"):
        _core.clip_grad_norm([huge_view(shape=(1,))], 1.0, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.batch_norm_eval(huge_view(shape=(4, 1 << 30)), 1, None, None, v, v, 1e-5, None)


@pytest.mark.slow
@pytest.mark.skipif(SANITIZED, reason="the ASan allocator touches huge allocations")
@pytest.mark.skipif(sys.maxsize < 2**40, reason="64-bit address space needed")
def test_64bit_indexing_past_2_31_elements():
    """A C-contiguous array of > 2^31 float32 zeros costs no memory until written (calloc maps
    zero pages on demand); a reduction over it must see the two values written past 2^31."""
    try:
        a = np.zeros(HUGE, np.float32)
    except MemoryError:
        pytest.skip("no address space for an 8 GiB lazy allocation")
    a[(1 << 31) + 5] = 3.0
    a[-1] = 4.0
    rss0 = _rss_bytes()
    assert global_norm([a]) == 5.0
    assert clip_grad_norm([a], 10.0) == 5.0
    assert _rss_bytes() - rss0 < 256 << 20


# ---- pickling and copying ------------------------------------------------------------------


def _train_state(model, loss_fn, opt, steps=2):
    rng = np.random.default_rng(3)
    for _ in range(steps):
        x = rng.standard_normal((16, 6)).astype(np.float32)
        t = rng.integers(0, 3, 16)
        model.train()
        loss_fn(model(x), t)
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    return [p.copy() for p in model.parameters()] + [
        a.copy() for v in opt.state.values() for a in v
    ]


@pytest.mark.parametrize("opt_cls", [SGD, Momentum, RMSprop, Adam, AdamW])
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_pickle_and_deepcopy_round_trip(opt_cls, how):
    model = nn.mlp(6, [8], 3, batch_norm=True, dropout=0.1, seed=0)
    loss_fn = nn.SoftmaxCrossEntropy(label_smoothing=0.1)
    hp = {"lr": 0.05} if opt_cls is not Momentum else {"lr": 0.05, "beta": 0.9}
    opt = opt_cls(model.parameters(), grads=model.gradients(), **hp)
    _train_state(model, loss_fn, opt)
    if how == "pickle":
        m2, l2, o2 = pickle.loads(pickle.dumps((model, loss_fn, opt)))
    else:
        m2, l2, o2 = copy.deepcopy((model, loss_fn, opt))
    # The copy's optimizer updates the copy's parameters, not the original's.
    assert all(a is b for a, b in zip(o2.params, m2.parameters()))
    assert all(a is b for a, b in zip(o2.grads, m2.gradients()))
    assert not any(np.shares_memory(a, b) for a, b in zip(o2.params, opt.params))
    assert o2.steps == opt.steps and o2.hyperparameters() == opt.hyperparameters()
    assert same(_train_state(m2, l2, o2), _train_state(model, loss_fn, opt))


@pytest.mark.parametrize(
    "obj",
    [
        nn.BatchNorm(4, axis=-1),
        nn.Linear(3, 4, rng=0),
        nn.ReLU(),
        nn.Tanh(),
        nn.Dropout(0.3, seed=1),
        nn.Softmax(axis=0),
        nn.LogSoftmax(),
        nn.SoftmaxCrossEntropy(weight=np.ones(3), ignore_index=1, reduction="sum"),
        nn.SigmoidBinaryCrossEntropy(pos_weight=np.ones(3)),
    ],
    ids=lambda o: type(o).__name__,
)
def test_layers_and_losses_round_trip(obj):
    for clone in (pickle.loads(pickle.dumps(obj)), copy.deepcopy(obj), copy.copy(obj)):
        assert type(clone) is type(obj)
        assert repr(clone) == repr(obj)
        for k, v in obj.state_dict().items():
            assert same([clone.state_dict()[k]], [v])
