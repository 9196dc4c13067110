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
