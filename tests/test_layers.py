"""Layers of bnfast.nn: gradients against finite differences, buffers, modes, backends."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from bnfast import nn
from bnfast.testing import assert_close

# --- finite differences (float64) -----------------------------------------------------------


def _numeric_grad(f, a: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of a (in place)."""
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return g


def _check_layer_grads(layer: nn.Module, x: np.ndarray, rng: np.random.Generator, reset=None):
    """Objective L = sum(layer(x) * r): dL/dout = r; compare dx and every parameter gradient."""
    out = layer.forward(x)
    r = rng.normal(size=out.shape)

    def loss() -> float:
        if reset is not None:
            reset()
        return float(np.sum(layer.forward(x) * r))

    if reset is not None:
        reset()
    layer.zero_grad()
    layer.forward(x)
    dx = np.array(layer.backward(r))
    grads = [np.array(g) for g in layer.gradients()]
    assert_close(dx, _numeric_grad(loss, x), np.float64, ulps=1e8, err_msg="dx")
    for i, (p, g) in enumerate(zip(layer.parameters(), grads)):
        assert_close(g, _numeric_grad(loss, p), np.float64, ulps=1e8, err_msg=f"param {i}")


def test_linear_gradients(rng):
    layer = nn.Linear(7, 5, rng=1, dtype=np.float64)
    layer.bias[...] = rng.normal(size=5)
    _check_layer_grads(layer, rng.normal(size=(4, 7)), rng)


def test_linear_without_bias_gradients(rng):
    layer = nn.Linear(3, 9, bias=False, init="xavier", rng=2, dtype=np.float64)
    assert len(layer.parameters()) == 1
    _check_layer_grads(layer, rng.normal(size=(6, 3)), rng)


def test_relu_gradients(rng):
    x = rng.normal(size=(5, 8))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink
    _check_layer_grads(nn.ReLU(), x, rng)


def test_tanh_gradients(rng):
    _check_layer_grads(nn.Tanh(), rng.normal(size=(5, 8)), rng)


def test_dropout_gradients(rng):
    layer = nn.Dropout(0.3, seed=4)
    calls = layer.calls.copy()

    def reset() -> None:  # the same mask for every forward
        layer.calls[...] = calls

    _check_layer_grads(layer, rng.normal(size=(6, 9)), rng, reset=reset)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_network_gradients(isa, rng, activation, batch_norm):
    model = nn.mlp(6, [8, 7, 5], 4, batch_norm=batch_norm, activation=activation, seed=3,
                   dtype=np.float64)  # fmt: skip
    for p in model.parameters():  # move gamma/beta/bias off their trivial starting values
        p += 0.1 * rng.normal(size=p.shape)
    _check_layer_grads(model, rng.normal(size=(10, 6)), rng)


# --- Linear ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "fan"), [("he", lambda i, o: 2 / i), ("xavier", lambda i, o: 2 / (i + o))]
)
def test_linear_init_scale(init, fan):
    layer = nn.Linear(400, 300, init=init, rng=0)
    assert layer.weight.shape == (300, 400) and layer.weight.dtype == np.float32
    assert abs(layer.weight.std() ** 2 / fan(400, 300) - 1) < 0.02
    assert abs(layer.weight.mean()) < 0.01
    assert not layer.bias.any()


def test_linear_init_is_seeded():
    a, b, c = nn.Linear(5, 4, rng=7), nn.Linear(5, 4, rng=7), nn.Linear(5, 4, rng=8)
    assert np.array_equal(a.weight, b.weight) and not np.array_equal(a.weight, c.weight)


def test_linear_forward_matches_formula(rng, dtype):
    layer = nn.Linear(33, 17, rng=0, dtype=dtype)
    layer.bias[...] = rng.normal(size=17)
    x = rng.normal(size=(9, 33)).astype(dtype)
    y = layer.forward(x)
    assert y.dtype == dtype
    expected = x.astype(np.float64) @ layer.weight.T.astype(np.float64) + layer.bias
    assert_close(y, expected, dtype, ulps=64, scale=np.abs(x) @ np.abs(layer.weight.T) + 1)


def test_linear_bad_input():
    with pytest.raises(ValueError, match="init"):
        nn.Linear(3, 4, init="orthogonal")
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 4)
    with pytest.raises(TypeError, match="dtype"):
        nn.Linear(3, 4, dtype=np.int32)
    layer = nn.Linear(3, 4)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        layer.forward(np.zeros((2, 5), np.float32))
    layer.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.zeros((3, 4), np.float32))


def test_gradients_accumulate_until_zero_grad(rng):
    layer = nn.Linear(4, 3, rng=0, dtype=np.float64)
    x, dy = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    layer.forward(x)
    layer.backward(dy)
    once = [g.copy() for g in layer.gradients()]
    layer.backward(dy)
    for g, g1 in zip(layer.gradients(), once):
        assert np.allclose(g, 2 * g1)
    layer.zero_grad()
    assert not any(g.any() for g in layer.gradients())


# --- activations and dropout -----------------------------------------------------------------


def test_relu_values_and_kink():
    x = np.array([[-np.inf, -1.0, 0.0, 2.0, np.inf]], np.float32)
    relu = nn.ReLU()
    assert np.array_equal(relu.forward(x), [[0, 0, 0, 2, np.inf]])
    assert np.array_equal(relu.backward(np.ones_like(x)), [[0, 0, 0, 1, 1]])


def test_dropout_modes_and_statistics(rng):
    x = np.ones((200, 500), np.float32)
    d = nn.Dropout(0.25, seed=1)
    y = d.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    assert np.allclose(y[kept], 1 / 0.75)
    assert np.array_equal(d.backward(x) != 0, kept)
    y2 = d.forward(x)  # a new mask each call
    assert not np.array_equal(y2 != 0, kept)
    d.eval()
    assert d.forward(x) is x and d.backward(x) is x
    assert nn.Dropout(0.0).forward(x) is x
    with pytest.raises(ValueError, match="p must"):
        nn.Dropout(1.0)


def test_dropout_masks_follow_the_call_count():
    x = np.ones((4, 50))
    a, b = nn.Dropout(0.5, seed=3), nn.Dropout(0.5, seed=3)
    a.forward(x)
    b.load_state_dict(a.state_dict())
    assert np.array_equal(a.forward(x), b.forward(x))


# --- Sequential ------------------------------------------------------------------------------


def test_sequential_parameters_and_state_dict():
    model = nn.mlp(5, [4, 3], 2, seed=0)
    # Linear(no bias), BN(w, b), ReLU, Linear(no bias), BN(w, b), ReLU, Linear(w, b)
    assert [p.shape for p in model.parameters()] == [
        (4, 5), (4,), (4,), (3, 4), (3,), (3,), (2, 3), (2,)
    ]  # fmt: skip
    assert [g.shape for g in model.gradients()] == [p.shape for p in model.parameters()]
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    assert "1.running_mean" in state and "6.bias" in state
    other = nn.mlp(5, [4, 3], 2, seed=1)
    assert not np.array_equal(other[0].weight, model[0].weight)
    other.load_state_dict(state)
    assert np.array_equal(other[0].weight, model[0].weight)
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if k != "0.weight"})
    with pytest.raises(TypeError, match="layer 1"):
        nn.Sequential(nn.ReLU(), lambda x: x)
    assert len(model) == 7 and isinstance(model[2], nn.ReLU) and "Linear" in repr(model)


def test_train_eval_propagate():
    model = nn.mlp(5, [4], 2, dropout=0.5)
    model.eval()
    assert not any(layer.training for layer in model)
    model.train()
    assert all(layer.training for layer in model)


# --- buffers ---------------------------------------------------------------------------------


def test_buffers_are_reused_and_views_for_smaller_batches(rng):
    model = nn.mlp(16, [32, 32], 10, seed=0)
    x = rng.normal(size=(64, 16)).astype(np.float32)
    y1 = model.forward(x)
    dx1 = model.backward(np.ones_like(y1))
    y2 = model.forward(x)
    dx2 = model.backward(np.ones_like(y2))
    assert y1.ctypes.data == y2.ctypes.data and dx1.ctypes.data == dx2.ctypes.data
    y3 = model.forward(x[:17])  # a smaller last batch: the first rows of the same buffer
    assert y3.shape == (17, 10) and y3.ctypes.data == y1.ctypes.data and y3.flags.c_contiguous
    dx3 = model.backward(np.ones_like(y3))
    assert dx3.ctypes.data == dx1.ctypes.data


@pytest.mark.parametrize("backend_layers", ["bn-relu", "tanh-dropout"])
def test_training_step_allocates_nothing_large(rng, backend_layers):
    n, width = 256, 512
    if backend_layers == "bn-relu":
        model = nn.mlp(64, [width, width], 10, seed=0)
    else:
        model = nn.mlp(64, [width, width], 10, batch_norm=False, activation="tanh", dropout=0.2)
    x = rng.normal(size=(n, 64)).astype(np.float32)
    dy = rng.normal(size=(n, 10)).astype(np.float32)

    def step(m: int) -> None:
        model.zero_grad()
        model.forward(x[:m])
        model.backward(dy[:m])

    step(n)
    step(n - 55)  # the last, smaller batch of an epoch
    tracemalloc.start()
    try:
        step(n)
        step(n - 55)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    activation_bytes = n * width * 4
    assert peak < activation_bytes / 8, f"a step allocated up to {peak} bytes"


# --- batch norm inside a network -------------------------------------------------------------


def test_batch_norm_train_and_eval_in_a_network(isa, rng):
    model = nn.mlp(6, [12], 3, seed=0, dtype=np.float64)
    bn = model[1]
    x = rng.normal(2.0, 3.0, size=(40, 6))
    for _ in range(30):  # training forwards collect the running statistics
        model.forward(x)
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    h = x @ model[0].weight.T
    k = 0.9**30  # momentum 0.1 from mean 0 and variance 1
    assert_close(rm, (1 - k) * h.mean(axis=0), np.float64, ulps=256, scale=np.abs(h).max())
    expected_var = k + (1 - k) * h.var(axis=0, ddof=1)
    assert_close(rv, expected_var, np.float64, ulps=256, scale=h.var(axis=0).max())

    train_out = np.array(model.forward(x))  # a 31st update
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    model.eval()
    full = np.array(model.forward(x))
    single = np.array(model.forward(x[3:4]))  # a batch of one is fine in evaluation
    assert_close(single[0], full[3], np.float64, ulps=64, scale=np.abs(full).max())
    # evaluation uses the running statistics, not the batch's
    hn = (h - bn.running_mean) / np.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    expected = np.maximum(hn, 0) @ model[3].weight.T + model[3].bias
    assert_close(full, expected, np.float64, ulps=256, scale=np.abs(expected).max())
    assert not np.allclose(full, train_out)
    assert np.array_equal(bn.running_mean, rm) and np.array_equal(bn.running_var, rv)
    model.train()
    with pytest.raises(ValueError):  # batch norm in training refuses a batch of one
        model.forward(x[:1])


# --- backends --------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_native_and_numpy_backends_agree(isa, rng, dtype, training):
    native = nn.mlp(20, [33, 17, 9], 5, seed=2, dtype=dtype)
    ref = nn.mlp(20, [33, 17, 9], 5, seed=2, dtype=dtype, backend="numpy")
    assert ref.backend == "numpy" and all(layer.backend == "numpy" for layer in ref)
    native.train(training)
    ref.train(training)
    x = rng.normal(size=(31, 20)).astype(dtype)
    dy = rng.normal(size=(31, 5)).astype(dtype)
    for _ in range(2):
        yn, yr = np.array(native.forward(x)), np.array(ref.forward(x))
        native.zero_grad()
        ref.zero_grad()
        dxn, dxr = np.array(native.backward(dy)), np.array(ref.backward(dy))
    tol = {"ulps": 2048, "dtype": dtype}
    assert_close(yn, yr, scale=np.abs(yr).max(), **tol)
    assert_close(dxn, dxr, scale=np.abs(dxr).max(), **tol)
    for gn, gr in zip(native.gradients(), ref.gradients()):
        assert_close(gn, gr, scale=np.abs(gr).max(), **tol)
    for (k, a), b in zip(native.state_dict().items(), ref.state_dict().values()):
        assert_close(a, b, scale=np.abs(b).max(), err_msg=k, **tol)


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Softmax(axis=0),
        lambda: nn.LogSoftmax(),
    ],
    ids=["Softmax", "LogSoftmax"],
)
def test_softmax_layers_run_on_the_backend_they_are_set_to(isa, rng, dtype, make):
    native, ref = make(), make().set_backend("numpy")
    x = rng.normal(size=(9, 7)).astype(dtype)
    dy = rng.normal(size=(9, 7)).astype(dtype)
    yn, yr = np.array(native.forward(x)), ref.forward(x)
    dxn, dxr = np.array(native.backward(dy)), ref.backward(dy)
    tol = {"ulps": 256, "dtype": dtype}
    assert_close(yn, yr, scale=np.abs(yr).max(), **tol)
    assert_close(dxn, dxr, scale=np.abs(dxr).max(), **tol)
    # The reference allocates its outputs: a numpy-backend output never is a native buffer.
    assert not np.shares_memory(yr, native.forward(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.SoftmaxCrossEntropy(weight=np.arange(1.0, 6.0), label_smoothing=0.1),
        lambda: nn.SoftmaxCrossEntropy(ignore_index=2, reduction="sum"),
        lambda: nn.SigmoidBinaryCrossEntropy(pos_weight=np.full(5, 2.0)),
    ],
    ids=["ce-weight-smoothing", "ce-ignore-sum", "bce-pos-weight"],
)
def test_losses_run_on_the_backend_they_are_set_to(isa, rng, dtype, make):
    native, ref = make(), make().set_backend("numpy")
    x = rng.normal(size=(11, 5)).astype(dtype)
    if isinstance(native, nn.SigmoidBinaryCrossEntropy):
        target = (rng.random((11, 5)) < 0.5).astype(dtype)
    else:
        target = rng.integers(0, 5, 11)
    ln, lr = native(x, target), ref(x, target)
    assert isinstance(ln, float) and isinstance(lr, float)
    assert_close(np.array([ln]), np.array([lr]), dtype, ulps=256, scale=abs(lr) + 1)
    gr = ref.backward().copy()
    assert_close(native.backward(), gr, dtype, ulps=256, scale=np.abs(gr).max())
    assert_close(ref.backward(2.0), 2 * gr, dtype, ulps=4, scale=np.abs(gr).max())


def test_module_bookkeeping_comes_from_the_declared_names():
    class Scale(nn.Module):
        _params = ("weight", "bias")
        _grads = ("dweight", "dbias")
        _buffers = ("count",)

        def __init__(self, bias: bool) -> None:
            self.weight, self.dweight = np.ones(3), np.zeros(3)
            self.bias = np.zeros(3) if bias else None
            self.dbias = np.zeros(3) if bias else None
            self.count = np.zeros((), np.int64)

    with_bias, without = Scale(bias=True), Scale(bias=False)
    assert [id(p) for p in with_bias.parameters()] == [id(with_bias.weight), id(with_bias.bias)]
    assert [id(g) for g in without.gradients()] == [id(without.dweight)]
    assert list(with_bias.state_dict()) == ["weight", "bias", "count"]
    assert list(without.state_dict()) == ["weight", "count"]
    with_bias.dweight += 1
    with_bias.zero_grad()
    assert not with_bias.dweight.any()
    model = nn.Sequential(nn.ReLU(), without, with_bias)
    assert list(model.state_dict()) == ["1.weight", "1.count", "2.weight", "2.bias", "2.count"]
    assert len(model.parameters()) == len(model.gradients()) == 3
    with pytest.raises(NotImplementedError):
        model(np.ones(3))  # Scale states no math


def test_set_backend_checks_the_name():
    model = nn.mlp(4, [3], 2)
    with pytest.raises(ValueError, match="backend"):
        model.set_backend("torch")
    with pytest.raises(TypeError, match="backend"):
        nn.Sequential(nn.ReLU(), backend=None)
    model.set_backend("numpy")
    assert model[1].backend == "numpy"


def test_linear_fed_its_own_output_keeps_backward_exact(rng):
    lin = nn.Linear(5, 5, dtype=np.float64)
    x = rng.normal(size=(3, 5))
    y1 = lin.forward(x)
    y1_copy = y1.copy()
    lin.forward(y1)
    assert np.array_equal(y1, y1_copy)
    lin.zero_grad()
    dy = rng.normal(size=(3, 5))
    lin.backward(dy)
    np.testing.assert_allclose(lin.dweight, dy.T @ y1_copy, rtol=1e-12)
