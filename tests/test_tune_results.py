"""Results tables, plots, the experiment's comparison, and the CLI (synthetic objectives)."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math

import pytest

from bnfast.tune import LogUniform, OneMinusLogUniform, Study, Uniform, random_search
from bnfast.tune.cli import add_parser, main
from bnfast.tune.experiment import compare, compare_text
from bnfast.tune.results import (
    _scale,
    best_so_far,
    best_trials,
    format_table,
    fraction_reaching,
    summary,
)
from bnfast.tune.storage import TrialRecord
from bnfast.tune.synthetic import QUADRATIC_SPACE, flaky

HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def _t(n, status, value):
    return TrialRecord(n, 0, {"lr": 10.0**-n}, {}, 0, status, value)


def test_best_so_far_and_fraction():
    ts = [_t(0, "failed", None), _t(1, "complete", 0.5), _t(2, "complete", 0.3),
          _t(3, "pruned", 0.9), _t(4, "complete", 0.8)]  # fmt: skip
    bsf = best_so_far(ts)
    assert math.isnan(bsf[0]) and bsf[1:] == [0.5, 0.5, 0.5, 0.8]
    assert best_so_far(ts, maximize=False)[1:] == [0.5, 0.3, 0.3, 0.3]
    assert fraction_reaching(ts, 0.5) == 2 / 5
    assert [t.number for t in best_trials(ts, 2)] == [4, 1]
    assert math.isnan(fraction_reaching([], 0.5))


def test_table_and_summary():
    s = random_search(flaky, QUADRATIC_SPACE, 10, seed=1, workers=1)
    table = format_table(s.trials(), top=3)
    lines = table.splitlines()
    assert len(lines) == 5 and lines[0].split()[:3] == ["#", "stage", "score"]
    assert lines[2].split()[0] == str(s.best_trial.number)
    text = summary(s)
    assert "10 trials" in text and "failed: RuntimeError" in text


def test_scale_guess_without_space():
    ts = [TrialRecord(i, 0, {"lr": lr, "b": b, "x": x, "c": "a"}, {}, 0, "complete", 1.0)
          for i, (lr, b, x) in enumerate([(1e-4, 0.9, 0.1), (0.5, 0.999, 0.9)])]  # fmt: skip
    assert [_scale(k, ts, None) for k in ["lr", "b", "x", "c"]] == [
        "log", "one-minus-log", "linear", "linear"
    ]  # fmt: skip
    space = {"lr": LogUniform(1e-4, 1), "b": OneMinusLogUniform(0.9, 0.999), "x": Uniform(0, 1)}
    assert [_scale(k, ts, space) for k in ["lr", "b", "x"]] == ["log", "one-minus-log", "linear"]


@pytest.mark.skipif(not HAS_MPL, reason="matplotlib not installed")
def test_plots(tmp_path):
    from bnfast.tune.results import save_plots

    s = random_search(flaky, QUADRATIC_SPACE, 8, seed=1, workers=1)
    paths = save_plots(s, tmp_path / "plots")
    assert [p.name for p in paths] == ["params.png", "best_so_far.png", "curves.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def _lr_window(params, report, lo=1e-3, hi=1e-1):
    ok = lo <= params["lr"] <= hi
    report(1, 0.9 if ok else 0.1)
    return 0.9 if ok else 0.1


def test_compare_arms_share_configurations(tmp_path):
    space = {"lr": LogUniform(1e-4, 1.0), "beta1": OneMinusLogUniform(0.9, 0.999)}
    wide = functools.partial(_lr_window, lo=1e-3, hi=1.0)
    studies = compare({"wide": wide, "narrow": _lr_window}, space, 20,
                      storage=tmp_path / "e.db", prefix="e-", workers=1)  # fmt: skip
    a, b = (s.trials() for s in studies.values())
    assert [t.params for t in a] == [t.params for t in b]
    fa, fb = (fraction_reaching(s.trials(), 0.5) for s in studies.values())
    assert fa > fb  # the wider window reaches the target more often
    # log-uniform lr: the fraction estimates the share of decades in the window
    assert abs(fa - 0.75) < 0.25 and abs(fb - 0.5) < 0.25
    text = compare_text(studies, 0.5)
    assert "only with wide" in text and "0 only with narrow" in text
    if HAS_MPL:
        from bnfast.tune.experiment import plot_compare

        plot_compare(studies, "lr", 0.5).savefig(tmp_path / "c.png")


def test_cli_search_report_and_resume(tmp_path, capsys):
    db = str(tmp_path / "c.db")
    base = ["--objective", "bnfast.tune.synthetic:flaky", "--space",
            "bnfast.tune.synthetic:QUADRATIC_SPACE", "--storage", db, "--workers", "1",
            "--no-progress"]  # fmt: skip
    assert main([*base, "--trials", "6", "--strategy", "coarse-to-fine", "--stages", "2"]) == 0
    out = capsys.readouterr().out
    assert "study 'flaky-coarse-to-fine'" in out and "6 trials" in out
    with pytest.warns(UserWarning, match="4 trials cover 4 of the 32 grid points"):
        assert main([*base, "--trials", "4", "--strategy", "grid", "--grid-points", "2"]) == 0
    assert main([*base, "--trials", "5", "--prune", "median", "--seed", "2"]) == 0
    capsys.readouterr()
    assert main(["--report", db, "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("study '") == 3 and "stage 1 box" in out
    assert main(["--report", db, "--study", "flaky-grid"]) == 0
    assert "4 trials" in capsys.readouterr().out
    assert main(["--report", str(tmp_path / "nope.db")]) == 2
    # the same command again resumes (nothing to do)
    with pytest.warns(UserWarning, match="grid points"):
        assert main([*base, "--trials", "4", "--strategy", "grid", "--grid-points", "2"]) == 0
    assert len(Study.load(db, "flaky-grid").trials()) == 4
    capsys.readouterr()
    # same study, other seed: refused with a message, not a traceback
    assert main([*base, "--trials", "4", "--strategy", "grid", "--grid-points", "2", "--seed",
                 "9"]) == 2  # fmt: skip
    assert "has seed 0, not 9" in capsys.readouterr().err


def test_cli_add_parser_plugs_into_a_parent():
    parser = argparse.ArgumentParser(prog="bnfast")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["tune", "--trials", "7", "--strategy", "coarse-to-fine",
                              "--scheduler", "tcp://h:8786", "--workers", "3"])  # fmt: skip
    assert (args.trials, args.strategy, args.scheduler, args.workers) == (
        7, "coarse-to-fine", "tcp://h:8786", 3
    )  # fmt: skip
    assert args.func.__name__ == "run" and args.storage == "runs.db" and args.report is None


def test_cli_minimize(tmp_path, capsys):
    db = str(tmp_path / "m.db")
    assert main(["--objective", "bnfast.tune.synthetic:quadratic", "--space",
                 "bnfast.tune.synthetic:QUADRATIC_SPACE", "--storage", db, "--workers", "1",
                 "--trials", "3", "--minimize", "--no-progress"]) == 0  # fmt: skip
    s = Study.load(db)
    assert s.direction == "minimize"
    assert s.best_trial.value == min(t.value for t in s.trials())


def test_digits_objective_cli_panda_and_experiment(tmp_path, capsys):
    db = str(tmp_path / "digits.db")
    assert main(["--trials", "2", "--epochs", "1", "--workers", "1", "--storage", db,
                 "--no-progress"]) == 0  # fmt: skip
    trials = Study.load(db, "digits-random").trials()
    assert all(t.status == "complete" and 0.0 <= t.value <= 1.0 for t in trials), [
        t.error for t in trials
    ]
    assert main(["--panda", "--epochs", "2", "--params", "lr=0.01", "--change", "1:lr=0.001",
                 "--storage", db]) == 0  # fmt: skip
    panda = Study.load(db, "digits-panda")
    assert [e["kind"] for e in panda.events()] == ["set"] and len(panda.trials()[0].curve) == 2
    assert main(["--experiment", "batchnorm", "--trials", "2", "--epochs", "1", "--workers",
                 "1", "--storage", db, "--no-progress"]) == 0  # fmt: skip
    assert "batchnorm" in capsys.readouterr().out
