"""Panda mode: one model watched epoch by epoch, changes and rewinds recorded."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bnfast.tune import Study
from bnfast.tune.panda import parse_assignment, sparkline


class Toy:
    """Gradient descent on 0.5 * |w|^2 with noise from the seed; score = -loss."""

    def __init__(self, params, seed):
        self.rng = np.random.default_rng(seed)
        self.w = self.rng.normal(size=4) * 3

    def train_epoch(self, params, epoch):
        self.w = self.w - params["lr"] * self.w + 1e-3 * self.rng.normal(size=4)
        return float(-0.5 * self.w @ self.w)


class ToyState(Toy):
    def state_dict(self):
        return {"w": self.w, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, s):
        self.w = s["w"].copy()
        self.rng.bit_generator.state = s["rng"]


@pytest.mark.parametrize("cls", [Toy, ToyState])
def test_run_set_rewind_recorded(cls, tmp_path):
    out = io.StringIO()
    study = Study(None, tmp_path / "p.db", strategy="panda", seed=1)
    panda = study.panda(cls, {"lr": 0.1}, out=out)
    panda.run(3)
    after3 = panda.curve
    panda.run(2)
    panda.rewind(3)
    assert panda.curve == after3 and panda.epoch == 3
    panda.run(2)  # same state and params as before: the same epochs again
    assert [v for _, v in panda.curve[3:]] == pytest.approx(
        [v for _, v in study.events()[0]["payload"]["dropped"]]
    )
    panda.set(lr=0.5)
    panda.run(1)
    rec = panda.finish()
    assert rec.status == "complete" and rec.params == {"lr": 0.5}
    assert [s for s, _ in rec.curve] == [1, 2, 3, 4, 5, 6]
    stored = study.trials()[0]
    assert stored.curve == rec.curve and stored.metrics == {"mode": "panda"}
    kinds = [(e["kind"], e["step"]) for e in study.events(0)]
    assert kinds == [("rewind", 5), ("set", 5)]
    assert study.events(0)[1]["payload"] == {"old": {"lr": 0.1}, "new": {"lr": 0.5}}
    text = out.getvalue()
    assert "epoch   6" in text and "rewound to epoch 3" in text
    with pytest.raises(ValueError):
        panda.rewind(9)


def test_second_panda_gets_next_number_and_seed():
    study = Study(None, strategy="panda")
    a = study.panda(Toy, {"lr": 0.1}, out=None)
    a.run(1)
    b = study.panda(Toy, {"lr": 0.1}, out=None)
    assert (a.number, b.number) == (0, 1) and a.record.seed != b.record.seed


def test_interact_scripted():
    answers = iter(["lr=0.2", "", "rewind 1", "bogus", "run 2", "stop"])
    study = Study(None, strategy="panda")
    panda = study.panda(Toy, {"lr": 0.1}, out=io.StringIO())
    rec = panda.interact(10, input=lambda prompt: next(answers))
    assert rec.status == "complete"
    # epochs: 1, (lr=0.2), 2, rewind to 1, ?, run 2 -> 3, stop
    assert [s for s, _ in rec.curve] == [1, 2, 3] and rec.params["lr"] == 0.2
    assert [e["kind"] for e in study.events()] == ["set", "rewind"]


def test_interact_eof_stops():
    study = Study(None, strategy="panda")
    panda = study.panda(Toy, {"lr": 0.1}, out=None)

    def eof(prompt):
        raise EOFError

    assert [s for s, _ in panda.interact(5, input=eof).curve] == [1]


def test_helpers():
    assert parse_assignment("lr=1e-3") == ("lr", 0.001)
    assert parse_assignment("n=3") == ("n", 3)
    assert parse_assignment("bn=False") == ("bn", False)
    assert parse_assignment("act=relu") == ("act", "relu")
    assert sparkline([0, 1, 2]) == "▁▄█" and sparkline([]) == ""


def test_panda_study_cannot_optimize():
    with pytest.raises(ValueError):
        Study(None, strategy="panda").optimize(lambda p, r: 0.0, 1)


def _digits():
    pytest.importorskip("sklearn")
    from bnfast.tune import digits

    return digits


SMALL = {"lr": 0.05, "hidden": 16, "layers": 2, "batch_size": 128}


def test_digits_panda_changes_beta_for_momentum(tmp_path):
    """Panda's beta reaches the course's Momentum between epochs."""
    digits = _digits()
    study = Study(None, tmp_path / "p.db", strategy="panda", objective_version=digits.VERSION)
    params = {**SMALL, "optimizer": "momentum"}
    panda = study.panda(digits.DigitsModel, params, out=None)
    other = digits.DigitsModel(params, panda.record.seed)
    panda.run(1)
    other.train_epoch(params, 1)
    assert panda.model.opt.beta == 0.9
    panda.set(beta=0.5)
    panda.run(1)
    assert panda.model.opt.hyperparameters()["beta"] == 0.5
    other.train_epoch(params, 2)  # same seed, beta kept at 0.9: the weights differ
    assert not np.array_equal(panda.model.net.parameters()[0], other.net.parameters()[0])


@pytest.mark.parametrize("name", ["adam", "adamw", "momentum", "sgd"])
def test_digits_hyperparameters_reach_every_optimizer(name):
    digits = _digits()
    from bnfast.optim import OPTIMIZERS

    assert set(digits.OPTIMIZER_PARAMS) <= set(OPTIMIZERS)
    adam = name in ("adam", "adamw")
    own = {"beta1": 0.75, "beta2": 0.99, "eps": 1e-6} if adam else {"beta": 0.75}
    model = digits.DigitsModel({**SMALL, "optimizer": name}, seed=1)
    model.train_epoch({**SMALL, "optimizer": name, **own, "lr": 0.01, "decay": 0.5}, 3)
    hp = model.opt.hyperparameters()
    assert isinstance(model.opt, OPTIMIZERS[name]) and hp["lr"] == 0.01 / (1 + 0.5 * 2)
    if adam:
        assert tuple(hp["betas"]) == (0.75, 0.99) and hp["eps"] == 1e-6
    else:
        assert hp["beta" if name == "momentum" else "momentum"] == 0.75
    other = "beta" if adam else "beta1"
    with pytest.raises(ValueError, match=f"{other}=0.5 has no meaning for optimizer='{name}'"):
        digits.DigitsModel({**SMALL, "optimizer": name, other: 0.5}, seed=1)


def test_digits_refuses_unknown_and_structural_changes():
    digits = _digits()
    with pytest.raises(TypeError, match="no parameter 'momentum'"):
        digits.DigitsModel({**SMALL, "momentum": 0.9}, seed=0)
    with pytest.raises(ValueError, match="rmsprop"):
        digits.DigitsModel({**SMALL, "optimizer": "rmsprop"}, seed=0)
    model = digits.DigitsModel(SMALL, seed=0)
    with pytest.raises(ValueError, match="hidden cannot change"):
        model.train_epoch({**SMALL, "hidden": 32}, 1)
    with pytest.raises(TypeError, match="no parameter 'seed'"):
        digits.objective(SMALL, _Report(), epochs=1, seed=3)


class _Report:
    seed = 0

    def __call__(self, epoch, value):
        pass
