"""The data helpers, the trainer and checkpoints.

The trainer's mechanics are tested with a small squared-error loss and plain SGD written here
(test doubles, no kernels); the tests at the end use the softmax cross-entropy kernels, Adam and
their reference twins (the ``"numpy"`` backend of ``bnfast.nn`` and ``make_optimizer``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bnfast import nn
from bnfast.data import DataError, load_digits, load_npz, minibatches, split_standardize
from bnfast.testing import assert_close
from bnfast.train import (
    History,
    evaluate,
    fit,
    load_checkpoint,
    make_optimizer,
    predict,
    save_checkpoint,
)

# --- test doubles ----------------------------------------------------------------------------


class SquaredError:
    """0.5 * mean over rows of |logits - onehot(target)|^2."""

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:
        d = np.array(logits, dtype=np.float64)
        d[np.arange(len(target)), target] -= 1
        self._g = (d / len(target)).astype(logits.dtype)
        return 0.5 * float((d * d).sum()) / len(target)

    def backward(self) -> np.ndarray:
        return self._g


class SGD:
    """Plain gradient descent; a state dict with nested containers to exercise checkpoints."""

    def __init__(self, params: list[np.ndarray], lr: float = 0.1) -> None:
        self.params, self.lr, self.steps = params, lr, 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.steps += 1
        for p, g in zip(self.params, grads):
            p -= self.lr * g

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "steps": self.steps, "extra": (1, None, [np.arange(3)])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert state["extra"][0] == 1 and state["extra"][1] is None
        assert np.array_equal(state["extra"][2][0], np.arange(3))
        self.lr, self.steps = state["lr"], state["steps"]


def blobs(n: int = 300, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(classes, 5))
    y = rng.integers(0, classes, n)
    X = (centres[y] + rng.normal(size=(n, 5))).astype(np.float32)
    return X, y


# --- data ------------------------------------------------------------------------------------


def test_minibatches_cover_every_sample_once():
    X, y = np.arange(23.0)[:, None], np.arange(23)
    batches = list(minibatches(X, y, 5, seed=1))
    assert [len(b) for _, b in batches] == [5, 5, 5, 5, 3]
    assert sorted(np.concatenate([b for _, b in batches]).tolist()) == list(range(23))
    again = list(minibatches(X, y, 5, seed=1))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    other = list(minibatches(X, y, 5, seed=2))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(batches, other))
    for xb, yb in batches:
        assert np.array_equal(xb[:, 0], yb)
    assert [len(b) for _, b in minibatches(X, y, 5, drop_last=True)] == [5] * 4
    plain = [b.tolist() for _, b in minibatches(X, y, 10, shuffle=False)]
    assert plain == [list(range(10)), list(range(10, 20)), list(range(20, 23))]


def test_minibatches_never_form_a_batch_of_one():
    X, y = np.arange(21.0)[:, None], np.arange(21)
    sizes = [len(b) for _, b in minibatches(X, y, 5, seed=0)]
    assert sizes == [5, 5, 5, 6]  # the 21st sample joins the last batch
    assert [len(b) for _, b in minibatches(X, y, 5, drop_last=True)] == [5, 5, 5, 5]
    assert [len(b) for _, b in minibatches(X[:1], y[:1], 5)] == [1]  # nothing to join


def test_minibatches_reuse_buffers():
    X, y = np.arange(22.0)[:, None], np.arange(22)
    seen, ptrs = [], set()
    for xb, yb in minibatches(X, y, 4, seed=0, reuse=True):
        assert np.array_equal(xb[:, 0], yb)
        seen.extend(yb.tolist())
        ptrs.add(xb.ctypes.data)
    assert sorted(seen) == list(range(22)) and len(ptrs) == 1


def test_minibatches_bad_arguments():
    X, y = np.zeros((4, 2)), np.zeros(4, int)
    with pytest.raises(ValueError, match="batch_size"):
        next(minibatches(X, y, 0))
    with pytest.raises(TypeError, match="batch_size"):
        next(minibatches(X, y, 2.5))
    with pytest.raises(ValueError, match="samples"):
        next(minibatches(X, y[:3], 2))


def test_split_standardize_uses_training_statistics():
    rng = np.random.default_rng(0)
    X = rng.normal(5, 3, size=(100, 4))
    X[:, 2] = 7.0  # a constant feature is only shifted
    y = rng.integers(0, 3, 100)
    s = split_standardize(X, y, 0.2, 0.1, seed=3)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (70, 20, 10)
    assert s.X_train.dtype == np.float32 and s.y_train.dtype == np.int64
    assert np.allclose(s.X_train.mean(axis=0), 0, atol=1e-6)
    assert np.allclose(s.X_train.std(axis=0), [1, 1, 0, 1], atol=1e-5)
    rows = {tuple(np.round(r, 4)) for r in np.concatenate([s.X_train, s.X_val, s.X_test])}
    assert len(rows) == 100  # a partition of the samples
    s2 = split_standardize(X, y, 0.2, 0.1, seed=3)
    assert np.array_equal(s.X_val, s2.X_val)
    with pytest.raises(DataError, match="fewer than 2"):
        split_standardize(X[:3], y[:3], 0.5, 0.4)
    with pytest.raises(ValueError, match="val_fraction"):
        split_standardize(X, y, 1.0, 0.0)


def test_load_digits():
    pytest.importorskip("sklearn")
    d = load_digits(seed=0)
    assert d.X_train.shape == (1079, 64) and len(d.y_val) == 359 and len(d.y_test) == 359
    assert d.num_classes == 10
    assert abs(float(d.X_train.mean())) < 1e-6


def test_load_npz_checks(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, X=np.zeros((4, 2, 3)), y=np.array([0, 1, 2, 1]))
    X, y = load_npz(good)
    assert X.shape == (4, 6) and y.dtype == np.int64
    cases = {
        "keys": ({"X": np.zeros((4, 2)), "labels": np.zeros(4)}, "missing key"),
        "shape": ({"X": np.zeros((4, 2)), "y": np.zeros((4, 1))}, r"shape \(N,\)"),
        "count": ({"X": np.zeros((4, 2)), "y": np.zeros(3, int)}, "4 samples but y has 3"),
        "neg": ({"X": np.zeros((4, 2)), "y": np.array([0, 1, -1, 1])}, r"y\[2\] = -1"),
        "frac": ({"X": np.zeros((4, 2)), "y": np.array([0, 1.5, 1, 0])}, "non-integer"),
        "nan": ({"X": np.full((4, 2), np.nan), "y": np.array([0, 1, 1, 0])}, "NaN"),
        "str": ({"X": np.array([["a"]] * 4), "y": np.array([0, 1, 1, 0])}, "numeric"),
        "1d": ({"X": np.zeros(4), "y": np.array([0, 1, 1, 0])}, "X must have shape"),
    }
    for name, (arrays, msg) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        with pytest.raises(DataError, match=msg):
            load_npz(path)
    with pytest.raises(DataError, match=r"y\[2\] = 2 >= num_classes = 2"):
        load_npz(good, num_classes=2)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"not an \.npz"):
        load_npz(tmp_path / "one.npy")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "absent.npz")


# --- the trainer (test doubles) --------------------------------------------------------------


def _model(seed: int = 0, **kw: Any) -> nn.Sequential:
    return nn.mlp(5, [16, 8], 3, seed=seed, **kw)


def test_fit_learns_and_records_history():
    X, y = blobs()
    model = _model()
    opt = SGD(model.parameters(), lr=0.2)
    h = fit(model, X[:200], y[:200], opt, epochs=8, batch_size=32, loss=SquaredError(),
            validation=(X[200:], y[200:]), progress=False)  # fmt: skip
    assert isinstance(h, History) and len(h) == 8 and h.epoch == list(range(1, 9))
    assert h.loss[-1] < h.loss[0] and h.accuracy[-1] > 0.9 and h.val_accuracy[-1] > 0.9
    assert all(t > 0 for t in h.time) and h.lr == [0.2] * 8
    assert opt.steps == 8 * 7  # 200 samples: 6 batches of 32 and one of 8
    loss, acc = evaluate(model, X[200:], y[200:], loss=SquaredError())
    assert acc == pytest.approx(h.val_accuracy[-1]) and loss == pytest.approx(h.val_loss[-1])
    pred = predict(model, X[200:], batch_size=7)
    assert pred.shape == (100,) and np.mean(pred == y[200:]) == pytest.approx(acc)
    assert predict(model, X[:4], return_logits=True).shape == (4, 3)
    assert model.training


def test_fit_survives_a_final_batch_of_one():
    X, y = blobs(65)
    model = _model()
    h = fit(model, X, y, SGD(model.parameters()), epochs=2, batch_size=16, loss=SquaredError(),
            progress=False)  # fmt: skip
    assert len(h) == 2
    with pytest.raises(ValueError, match="no full batch"):
        fit(model, X[:10], y[:10], SGD(model.parameters()), batch_size=16, drop_last=True,
            loss=SquaredError(), progress=False)  # fmt: skip


def test_fit_progress_output(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    X, y = blobs(60)
    model = _model()
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    fit(model, X, y, SGD(model.parameters()), epochs=2, loss=SquaredError(), progress=True,
        validation=(X, y))  # fmt: skip
    out = capsys.readouterr().out
    assert "epoch 1/2: loss" in out and "epoch 2/2" in out and "val_acc" in out
    monkeypatch.setattr(builtins, "__import__", real_import)
    pytest.importorskip("tqdm")
    fit(model, X, y, SGD(model.parameters()), epochs=1, loss=SquaredError(), progress=True)
    captured = capsys.readouterr()
    assert "training" in captured.err and "loss" in captured.err and captured.out == ""


def test_fit_bad_arguments():
    X, y = blobs(20)
    model = _model()
    opt = SGD(model.parameters())
    with pytest.raises(TypeError, match="integers"):
        fit(model, X, y.astype(float), opt, loss=SquaredError(), progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, X, y, opt, epochs=-1, loss=SquaredError(), progress=False)
    with pytest.raises(ValueError, match="checkpoint"):
        fit(model, X, y, opt, resume=True, loss=SquaredError(), progress=False)
    with pytest.raises(ValueError, match="shape"):
        fit(model, X, y[:5], opt, loss=SquaredError(), progress=False)


def _train(tmp_path, epochs, interrupt_at=None, resume=False, dropout=0.0) -> nn.Sequential:
    X, y = blobs(150)
    model = _model(dropout=dropout)
    opt = SGD(model.parameters(), lr=0.05)
    loss = SquaredError()
    if interrupt_at is not None:  # raise on the given (epoch, batch)
        calls = {"n": 0}
        inner = loss.forward

        def forward(logits, target):
            calls["n"] += 1
            if calls["n"] == interrupt_at:
                raise KeyboardInterrupt
            return inner(logits, target)

        loss.forward = forward
    ckpt = tmp_path / "ckpt.npz"
    fit(model, X, y, opt, epochs=epochs, batch_size=32, loss=loss, validation=(X, y),
        checkpoint=ckpt, resume=resume, progress=False, seed=5)  # fmt: skip
    return model


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, dropout):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = _train(tmp_path / "a", 5, dropout=dropout)
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 3 (5 batches per epoch)
        _train(tmp_path / "b", 5, interrupt_at=13, dropout=dropout)
    info = load_checkpoint(tmp_path / "b" / "ckpt.npz", _model(dropout=dropout))
    assert info["epoch"] == 2 and len(info["history"]) == 2
    resumed = _train(tmp_path / "b", 5, resume=True, dropout=dropout)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert np.array_equal(a, b), k
    h = load_checkpoint(tmp_path / "b" / "ckpt.npz", _model(dropout=dropout))["history"]
    h0 = load_checkpoint(tmp_path / "a" / "ckpt.npz", _model(dropout=dropout))["history"]
    assert h.loss == h0.loss and h.val_accuracy == h0.val_accuracy and h.epoch == [1, 2, 3, 4, 5]


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    model = _model()
    opt = SGD(model.parameters(), lr=0.3)
    opt.steps = 7
    hist = History(epoch=[1], loss=[0.5], accuracy=[0.9], val_loss=[np.nan],
                   val_accuracy=[np.nan], lr=[0.3], time=[0.1])  # fmt: skip
    save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1, history=hist, note="hi")
    other, opt2 = _model(seed=9), SGD([], lr=1.0)
    info = load_checkpoint(tmp_path / "c.npz", other, opt2)
    assert info["epoch"] == 1 and info["extra"] == {"note": "hi"}
    assert info["history"].loss == [0.5] and np.isnan(info["history"].val_loss[0])
    assert opt2.lr == 0.3 and opt2.steps == 7
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert np.array_equal(a, b), k
    with pytest.raises(KeyError, match="mismatch"):
        load_checkpoint(tmp_path / "c.npz", nn.mlp(5, [16], 3))
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(tmp_path / "c.npz", nn.mlp(5, [17, 8], 3))
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a bnfast checkpoint"):
        load_checkpoint(tmp_path / "plain.npz", model)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_plot_history(tmp_path):
    pytest.importorskip("matplotlib")
    from bnfast.train import plot_history

    h = History(epoch=[1, 2], loss=[1.0, 0.5], accuracy=[0.5, 0.8], val_loss=[1.1, 0.6],
                val_accuracy=[0.4, 0.7], lr=[0.1, 0.1], time=[0.1, 0.1])  # fmt: skip
    path = plot_history(h, tmp_path / "c.png", title="t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# --- with the softmax cross-entropy and Adam kernels and their reference twins ---------------


@pytest.mark.parametrize("steps", [1, 4])
def test_training_steps_native_vs_reference(isa, dtype, steps):
    """A whole training step (forward, loss, backward, Adam) on the kernels and on the NumPy
    reference from the same weights gives the same weights and running statistics."""
    X, y = blobs(64, classes=4)
    X = X.astype(dtype)
    models, opts, losses = {}, {}, {}
    for backend in ("native", "numpy"):
        m = nn.mlp(5, [33, 17, 9], 4, seed=1, dtype=dtype, backend=backend)
        models[backend] = m
        losses[backend] = nn.SoftmaxCrossEntropy().set_backend(backend)
        opts[backend] = make_optimizer("adam", m.parameters(), m.gradients(), backend, lr=1e-2)
    values = {}
    for backend, m in models.items():
        values[backend] = []
        for s in range(steps):
            xb, yb = X[16 * s : 16 * s + 16], y[16 * s : 16 * s + 16]
            m.zero_grad()
            values[backend].append(float(losses[backend].forward(m.forward(xb), yb)))
            m.backward(losses[backend].backward())
            opts[backend].step(m.gradients())
    # Adam's first steps move each weight by about lr whatever the gradient's size, so a
    # weight's error is measured against lr, not against the weight.
    ulps = 4096 if dtype == np.float32 else 256
    assert_close(values["native"], values["numpy"], dtype, ulps=ulps)
    for (k, a), b in zip(models["native"].state_dict().items(),
                         models["numpy"].state_dict().values()):  # fmt: skip
        assert_close(a, b, dtype, ulps=ulps, scale=np.abs(b).max() + 1e-2 * steps, err_msg=k)


def test_fit_native_and_numpy_backends_agree():
    X, y = blobs(200, classes=4)
    hist = {}
    for backend in ("native", "numpy"):
        m = nn.mlp(5, [16, 16, 8], 4, seed=0, backend=backend, dtype=np.float64)
        opt = make_optimizer("adam", m.parameters(), m.gradients(), backend, lr=1e-2)
        hist[backend] = fit(m, X.astype(np.float64), y, opt, epochs=3, batch_size=32,
                            progress=False)  # fmt: skip
    assert_close(hist["native"].loss, hist["numpy"].loss, np.float64, ulps=1e5)
    assert hist["native"].accuracy == hist["numpy"].accuracy


def test_fit_with_softmax_cross_entropy_and_adam_resumes_exactly(tmp_path):
    X, y = blobs(300, classes=3)

    def run(epochs: int, path, seed: int = 0) -> tuple[nn.Sequential, History]:
        model = _model(seed=seed)
        opt = make_optimizer("adam", model.parameters(), model.gradients(), lr=1e-2)
        h = fit(model, X[:200], y[:200], opt, epochs=epochs, validation=(X[200:], y[200:]),
                checkpoint=path, resume=True, progress=False)  # fmt: skip
        return model, h

    straight, h = run(4, tmp_path / "a.npz")
    assert h.val_accuracy[-1] > 0.9 and h.loss[-1] < h.loss[0]
    run(2, tmp_path / "b.npz")
    resumed, h2 = run(4, tmp_path / "b.npz", seed=7)  # the weights come from the checkpoint
    assert h2.loss == h.loss
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert np.array_equal(a, b), k
