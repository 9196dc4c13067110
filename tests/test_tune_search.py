"""Strategies, the driver, determinism, failures, pruning, executors."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bnfast.tune import (
    CoarseToFine,
    IntUniform,
    LogUniform,
    MedianPruner,
    SerialExecutor,
    Study,
    SuccessiveHalving,
    Uniform,
    coarse_to_fine,
    grid_search,
    random_search,
)
from bnfast.tune.strategies import trial_streams
from bnfast.tune.synthetic import QUADRATIC_SPACE, flaky, quadratic

SPACE2 = {"lr": LogUniform(1e-4, 1.0), "x": Uniform(0.0, 1.0)}


def key(study):
    return [(t.number, t.stage, t.params, t.seed, t.status, t.value) for t in study.trials()]


def test_random_search_records_everything():
    s = random_search(quadratic, QUADRATIC_SPACE, 12, seed=3, workers=1)
    ts = s.trials()
    assert [t.number for t in ts] == list(range(12))
    for t in ts:
        assert t.status == "complete" and t.stage == 0 and t.attempts == 1
        assert len(t.curve) == 4 and t.curve[-1][0] == 4
        assert t.duration is not None and t.started <= t.finished
        assert set(t.params) == set(QUADRATIC_SPACE)
        assert set(t.unit) == {"lr", "beta", "x", "units"}  # the Choice has no coordinate
    assert s.best_trial.value == max(t.value for t in ts)


def test_trial_streams_depend_only_on_seed_and_number():
    a = trial_streams(7, 5)
    b = trial_streams(7, 5)
    assert a[1] == b[1] and a[0].random() == b[0].random()
    assert trial_streams(7, 6)[1] != a[1] and trial_streams(8, 5)[1] != a[1]
    ss = np.random.SeedSequence(7).spawn(6)[5]
    assert np.random.default_rng(ss.spawn(2)[0]).random() == trial_streams(7, 5)[0].random()


@pytest.mark.parametrize("strategy", ["random", "coarse-to-fine"])
def test_determinism_across_worker_counts(strategy):
    strat = CoarseToFine(trials_per_stage=4, top_k=2) if strategy != "random" else "random"
    serial = Study(QUADRATIC_SPACE, seed=11, strategy=strat).optimize(quadratic, 8, workers=1)
    with ThreadPoolExecutor(3) as ex:
        threads = Study(QUADRATIC_SPACE, seed=11, strategy=strat).optimize(
            quadratic, 8, executor=ex
        )
    assert key(serial) == key(threads)


def test_determinism_with_process_pool():
    serial = random_search(quadratic, QUADRATIC_SPACE, 6, seed=5, workers=1)
    pool = random_search(quadratic, QUADRATIC_SPACE, 6, seed=5, workers=2)
    assert key(serial) == key(pool)
    assert len({t.worker for t in pool.trials()}) >= 1


def test_extending_a_study_continues_the_stream(tmp_path):
    db = tmp_path / "s.db"
    s = Study(SPACE2, db, seed=2).optimize(quadratic, 5, workers=1)
    first = key(s)
    s = Study(SPACE2, db, seed=2).optimize(quadratic, 9, workers=1)
    assert key(s)[:5] == first and len(s.trials()) == 9
    fresh = Study(SPACE2, seed=2).optimize(quadratic, 9, workers=1)
    assert key(fresh) == key(s)
    assert all(t.attempts == 1 for t in s.trials())


def test_reopening_with_other_settings_is_an_error(tmp_path):
    db = tmp_path / "s.db"
    Study(SPACE2, db, seed=2)
    with pytest.raises(ValueError, match="seed"):
        Study(SPACE2, db, seed=3)
    with pytest.raises(ValueError, match="space"):
        Study({"lr": LogUniform(1e-3, 1.0)}, db, seed=2)
    Study(SPACE2, db, seed=3, name="other")  # another name is another study


def test_grid_vs_random_coverage():
    """With 9 trials over 2 parameters, a grid tries 3 values of each; random tries 9."""
    g = grid_search(quadratic, SPACE2, points=3, workers=1)
    r = random_search(quadratic, SPACE2, 9, workers=1, seed=0)
    assert len(g.trials()) == len(r.trials()) == 9
    assert len({t.params["lr"] for t in g.trials()}) == 3
    assert len({t.params["lr"] for t in r.trials()}) == 9
    # the grid's trials are the product, in a fixed order, whatever the seed
    assert key(grid_search(quadratic, SPACE2, points=3, workers=1, seed=9))[0][2] == {
        "lr": 1e-4,
        "x": 0.0,
    }


def test_coarse_to_fine_shrinks_around_the_optimum():
    s = coarse_to_fine(
        quadratic, SPACE2, stages=3, trials_per_stage=12, top_k=3, padding=0.1, workers=1, seed=4
    )
    ts = s.trials()
    assert [t.stage for t in ts] == [0] * 12 + [1] * 12 + [2] * 12
    boxes = s.stages()
    assert boxes[0] == {}
    opt = {"lr": LogUniform(1e-4, 1.0).warp(1e-2), "x": 0.3}
    for st in (1, 2):
        for name, (lo, hi) in boxes[st].items():
            assert 0.0 <= lo < hi <= 1.0
            assert lo <= opt[name] <= hi
            # every trial of the stage lies in its box
            assert all(lo - 1e-12 <= t.unit[name] <= hi + 1e-12 for t in ts if t.stage == st)
    width = {st: np.prod([hi - lo for lo, hi in boxes[st].values()]) for st in (1, 2)}
    assert width[1] < 0.5 and width[2] < width[1]
    # the later stages sample denser near the optimum than stage 0
    mean = [np.mean([t.value for t in ts if t.stage == st]) for st in range(3)]
    assert mean[2] > mean[0]


def test_coarse_to_fine_box_is_padded_and_clipped():
    from bnfast.tune.storage import TrialRecord

    c = CoarseToFine(trials_per_stage=2, top_k=2, padding=0.25)
    rec = [
        TrialRecord(0, 0, {}, {"a": 0.0, "b": 0.5}, 0, "complete", 1.0),
        TrialRecord(1, 0, {}, {"a": 0.2, "b": 0.6}, 0, "complete", 2.0),
        TrialRecord(2, 0, {}, {"a": 0.9, "b": 0.9}, 0, "complete", 0.5),
        TrialRecord(3, 0, {}, {"a": 0.9, "b": 0.9}, 0, "failed", None),
    ]
    box = c.box(1, {}, rec, maximize=True)
    assert box["a"] == (0.0, pytest.approx(0.45)) and box["b"] == pytest.approx((0.25, 0.85))
    box = c.box(1, {}, rec, maximize=False)  # best are 2 and 0
    assert box["a"] == (0.0, 1.0)


def test_failing_trials_are_recorded_and_do_not_stop_the_search():
    s = random_search(flaky, SPACE2, 15, seed=1, workers=1)
    ts = s.trials()
    failed = [t for t in ts if t.status == "failed"]
    assert len(ts) == 15 and failed
    assert all(t.params["x"] > 0.7 for t in failed)
    assert all("RuntimeError: diverged" in t.error and t.value is None for t in failed)
    assert all(t.status == "complete" for t in ts if t.params["x"] <= 0.7)


def _nan(params, report):
    return float("nan")


def _dict_score(params, report):
    report(1, 0.5)
    return {"score": 0.75, "loss": 0.1}


def _curve_only(params, report):
    report(1, 0.25)
    report(2, 0.5)


def test_objective_return_forms():
    s = Study(SPACE2).optimize(_nan, 1, workers=1)
    assert s.trials()[0].status == "failed" and "non-finite" in s.trials()[0].error
    s = Study(SPACE2).optimize(_dict_score, 1, workers=1)
    assert s.trials()[0].value == 0.75 and s.trials()[0].metrics == {"loss": 0.1}
    s = Study(SPACE2).optimize(_curve_only, 1, workers=1)
    assert s.trials()[0].value == 0.5


def _noisy_curve(params, report, steps=10):
    # Good trials (small x) climb high; the pruner should stop some bad ones early.
    for step in range(1, steps + 1):
        report(step, (1.0 - params["x"]) * step / steps)
    return 1.0 - params["x"]


@pytest.mark.parametrize(
    "pruner", [MedianPruner(n_startup_trials=3), SuccessiveHalving(min_step=1, eta=3)]
)
def test_pruning_stops_poor_trials(pruner):
    s = Study(SPACE2, seed=0).optimize(_noisy_curve, 30, workers=1, pruner=pruner)
    ts = s.trials()
    pruned = [t for t in ts if t.status == "pruned"]
    done = [t for t in ts if t.status == "complete"]
    assert pruned and done
    assert all(len(t.curve) < 10 and t.value == t.curve[-1][1] for t in pruned)
    # pruned trials are worse than the median of the complete ones
    assert np.median([t.params["x"] for t in pruned]) > np.median([t.params["x"] for t in done])
    assert s.best_trial.status == "complete"


def test_median_pruner_rules():
    p = MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    others = [[(1, 0.1), (2, 0.5)], [(1, 0.2), (2, 0.7)]]
    assert not p.should_prune(1, [(1, 0.0)], others, True)  # warm-up
    assert p.should_prune(2, [(1, 0.0), (2, 0.55)], others, True)  # below median 0.6
    assert not p.should_prune(2, [(1, 0.0), (2, 0.65)], others, True)
    assert not p.should_prune(2, [(1, 0.0), (2, 0.55)], others[:1], True)  # too few peers
    assert not p.should_prune(2, [(2, 0.55)], others, False)  # minimizing: 0.55 < 0.6


def test_successive_halving_rungs():
    p = SuccessiveHalving(min_step=2, eta=2, min_peers=2)
    assert [s for s in range(1, 20) if p.is_rung(s)] == [2, 4, 8, 16]
    others = [[(2, 0.1)], [(2, 0.9)], [(2, 0.5)]]
    assert not p.should_prune(3, [(3, 0.0)], others, True)
    assert p.should_prune(2, [(2, 0.2)], others, True)  # top half of 4 is 0.9, 0.5
    assert not p.should_prune(2, [(2, 0.6)], others, True)


def test_serial_executor_and_explicit_executor_not_shut_down():
    ex = SerialExecutor()
    Study(SPACE2).optimize(quadratic, 2, executor=ex)
    assert ex.submit(int, "3").result() == 3


def _unpicklable_objective_factory():
    return lambda params, report: 1.0


def test_unpicklable_objective_fails_trials_not_search():
    s = Study(SPACE2).optimize(_unpicklable_objective_factory(), 2, workers=2)
    ts = s.trials()
    assert [t.status for t in ts] == ["failed", "failed"]
    assert all("pickle" in t.error.lower() or "attribute" in t.error.lower() for t in ts)


def test_partial_objective_in_process_pool():
    obj = functools.partial(quadratic, steps=2)
    s = Study(SPACE2, seed=1).optimize(obj, 4, workers=2)
    assert all(t.status == "complete" and len(t.curve) == 2 for t in s.trials())


def test_progress_bar(capsys):
    import io

    buf = io.StringIO()
    Study(SPACE2).optimize(flaky, 5, workers=1, progress=buf)
    text = buf.getvalue()
    assert "5/5" in text and "best" in text


def test_define_by_run_space_with_coarse_to_fine():
    def space(suggest):
        n = suggest("layers", IntUniform(1, 3))
        out = {"layers": n, "lr": suggest("lr", LogUniform(1e-4, 1))}
        if n > 1:
            out["x"] = suggest("x", Uniform(0, 1))
        return out

    s = coarse_to_fine(quadratic, space, stages=2, trials_per_stage=8, top_k=2, workers=1)
    assert len(s.trials()) == 16 and set(s.stages()[1]) >= {"layers", "lr"}
