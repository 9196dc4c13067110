"""Everyday use (issue 20): thread budgets, quiet trials, study identity, extension, grids,
the default executor, orphans, the CLI, quasi-random search, export, ask-and-tell."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bnfast
from bnfast.tune import (
    CoarseToFine,
    GridSearch,
    LogUniform,
    MedianPruner,
    QuasiRandomSearch,
    Study,
    StudyMismatch,
    Uniform,
    random_search,
)
from bnfast.tune.cli import main
from bnfast.tune.strategies import qmc_point
from bnfast.tune.synthetic import QUADRATIC_SPACE, quadratic, thread_info

SYNTH = ["--objective", "bnfast.tune.synthetic:flaky", "--space",
         "bnfast.tune.synthetic:QUADRATIC_SPACE", "--workers", "1", "--no-progress"]  # fmt: skip


# 1. thread budget
def test_process_pool_workers_run_one_thread_each():
    s = Study(QUADRATIC_SPACE).optimize(thread_info, 4, workers=2)
    ts = s.trials()
    assert all(t.status == "complete" for t in ts), [t.error for t in ts]
    assert {t.metrics["pid"] for t in ts} != {os.getpid()}
    for t in ts:
        assert t.metrics["blas"] in (0, 1) and t.metrics["openmp"] in (0, 1)
        assert t.metrics["bnfast"] == 1
    s = Study(QUADRATIC_SPACE).optimize(thread_info, 2, workers=2, threads=2)
    assert {t.metrics["bnfast"] for t in s.trials()} == {2}


def test_in_process_trials_are_not_limited_and_budget_is_restored():
    before = bnfast.get_num_threads()
    s = Study(QUADRATIC_SPACE).optimize(thread_info, 1)
    assert s.trials()[0].metrics["bnfast"] == before
    s = Study(QUADRATIC_SPACE).optimize(thread_info, 1, threads=1)
    assert s.trials()[0].metrics["bnfast"] == 1
    assert bnfast.get_num_threads() == before


# 2. quiet trials, one bar
def test_digits_trial_is_quiet_and_bar_has_eta(capfd):
    from bnfast.tune import digits

    buf = io.StringIO()
    Study(digits.space()).optimize(lambda p, r: digits.objective(p, r, epochs=1), 2, progress=buf)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert "2/2" in buf.getvalue() and "ETA 0m" in buf.getvalue()


# 3. identity
def test_settings_are_part_of_the_identity(tmp_path):
    db = tmp_path / "s.db"
    Study(QUADRATIC_SPACE, db, settings={"epochs": 10, "isa": "avx2"}).optimize(quadratic, 2)
    Study(QUADRATIC_SPACE, db, settings={"isa": "avx2", "epochs": 10})  # same: resumes
    with pytest.raises(StudyMismatch, match=r"epochs=10, not epochs=3.*--study NAME"):
        Study(QUADRATIC_SPACE, db, settings={"epochs": 3, "isa": "avx2"})
    with pytest.raises(StudyMismatch, match="isa='avx2', not isa='scalar'"):
        Study(QUADRATIC_SPACE, db, settings={"epochs": 10, "isa": "scalar"})
    with pytest.raises(StudyMismatch, match="pruner=None"):
        Study(QUADRATIC_SPACE, db, settings={"epochs": 10, "isa": "avx2"}).optimize(
            quadratic, 3, pruner=MedianPruner()
        )


def test_cli_refuses_other_epochs_and_isa(tmp_path, capsys):
    db = str(tmp_path / "d.db")
    base = ["--trials", "1", "--workers", "1", "--no-progress", "--storage", db]
    assert main([*base, "--epochs", "1", "--isa", "scalar"]) == 0
    capsys.readouterr()
    assert main([*base, "--epochs", "2", "--isa", "scalar"]) == 2
    err = capsys.readouterr().err
    assert "epochs=1, not epochs=2" in err and "--study NAME" in err and "Traceback" not in err
    other = [i for i in bnfast.available_isas() if i != "scalar"]
    if other:
        assert main([*base, "--epochs", "1", "--isa", other[0]]) == 2
        assert "isa='scalar'" in capsys.readouterr().err
    assert main([*base, "--isa", "nope"]) == 2
    assert "unknown ISA" in capsys.readouterr().err


# 4. extending coarse-to-fine
def test_cli_extends_coarse_to_fine(tmp_path, capsys):
    db = str(tmp_path / "c.db")
    base = [*SYNTH, "--storage", db, "--strategy", "coarse-to-fine", "--stages", "3"]
    assert main([*base, "--trials", "6"]) == 0
    first = [(t.params, t.stage) for t in Study.load(db).trials()]
    assert main([*base, "--trials", "10"]) == 0
    ts = Study.load(db).trials()
    assert len(ts) == 10 and [(t.params, t.stage) for t in ts[:6]] == first
    assert [t.stage for t in ts[6:]] == [3, 3, 4, 4]  # more stages of the same size
    assert "CoarseToFine(trials_per_stage=2" in capsys.readouterr().out


@pytest.mark.parametrize("strategy", ["random", "sobol", "halton", CoarseToFine(3)])
def test_every_strategy_extends(strategy):
    s = Study(QUADRATIC_SPACE, strategy=strategy, seed=4)
    s.optimize(quadratic, 5)
    first = [t.params for t in s.trials()]
    s.optimize(quadratic, 9)
    whole = Study(QUADRATIC_SPACE, strategy=strategy, seed=4).optimize(quadratic, 9)
    assert [t.params for t in s.trials()][:5] == first
    assert [t.params for t in s.trials()] == [t.params for t in whole.trials()]


# 5. grids
def test_truncated_grid_warns_and_covers_every_axis():
    space = {"a": Uniform(0, 1), "b": LogUniform(1e-4, 1), "c": Uniform(0, 1),
             "d": Uniform(0, 1), "e": Uniform(0, 1)}  # fmt: skip
    with pytest.warns(UserWarning, match="5 trials cover 5 of the 243 grid points"):
        s = Study(space, strategy=GridSearch(3)).optimize(quadratic_a, 5)
    ts = s.trials()
    for name in space:
        assert len({t.params[name] for t in ts[:3]}) == 3  # every value of every axis
    g = GridSearch(3)
    points = [tuple(g.params(i, space, None, {})[0].values()) for i in range(243)]
    axes = [v for _, v in g._grid(space)]
    assert sorted(points) == sorted(itertools.product(*axes))  # the whole grid, once


def quadratic_a(params, report):
    return -abs(params["a"] - 0.3)


# 6. default executor
def test_python_api_runs_in_process_by_default():
    pid = os.getpid()
    s = random_search(lambda p, r: float(os.getpid() == pid), {"x": Uniform(0, 1)}, 3)
    assert [t.value for t in s.trials()] == [1.0, 1.0, 1.0]


# 7. orphans
DRIVER = """
import sys
from bnfast.tune import Study
from bnfast.tune.synthetic import QUADRATIC_SPACE, slow_logged
if __name__ == "__main__":
    Study(QUADRATIC_SPACE).optimize(slow_logged, 50, workers=2)
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_the_driver_dies(tmp_path, sig):
    (tmp_path / "driver.py").write_text(DRIVER)
    log = tmp_path / "log"
    env = {**os.environ, "BNFAST_TUNE_SLEEP": "30", "BNFAST_TUNE_LOG": str(log)}
    proc = subprocess.Popen([sys.executable, "driver.py"], cwd=tmp_path, env=env,
                            start_new_session=True)  # fmt: skip
    pids_file = tmp_path / "log.pids"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if pids_file.exists() and len(pids_file.read_text().split()) >= 2:
                break
            time.sleep(0.05)
        pids = [int(p) for p in pids_file.read_text().split()]
        pids += [p for p in _children(proc.pid) if p not in pids]  # the resource tracker too
        assert len(pids) >= 3
        os.kill(proc.pid, sig)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        alive = pids
        while alive and time.monotonic() < deadline:
            alive = [p for p in pids if _alive(p)]
            time.sleep(0.05)
        assert not alive
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{d}/stat").read_text() if d.isdigit() else ""
            if stat and int(stat.split(") ")[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split(") ")[1][0] != "Z"
    return True


# 8. the CLI
def test_report_into_a_closed_pipe_is_quiet(tmp_path):
    db = str(tmp_path / "r.db")
    assert main([*SYNTH, "--storage", db, "--trials", "3"]) == 0
    # From tmp_path: `python -m` puts the current directory first on sys.path, and the source
    # tree's bnfast/ has no compiled extension unless the install is editable.
    proc = subprocess.Popen([sys.executable, "-m", "bnfast.tune.cli", "--report", db],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)  # fmt: skip
    proc.stdout.close()  # `| head` that has already left
    with proc.stderr:
        err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


def test_help_is_plain_text_with_defaults_examples_and_the_tuned_parameters(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":mod:" not in out
    assert "epochs per trial (default 10)" in out
    assert "best trials per box (default 5)" in out and "(default 0.1)" in out
    assert "examples:" in out and "bnfast tune --report runs.db" in out
    for name in ("lr", "beta1", "hidden", "layers", "batch_size"):
        assert f"  {name} " in out
    assert "LogUniform(0.0001, 1.0)" in out


# capabilities
@pytest.mark.parametrize("kind", ["sobol", "halton"])
def test_quasi_random_is_reproducible_and_independent_of_workers(kind):
    a = Study(QUADRATIC_SPACE, strategy=kind, seed=1).optimize(quadratic, 6)
    b = Study(QUADRATIC_SPACE, strategy=kind, seed=1).optimize(quadratic, 6, workers=2)
    c = Study(QUADRATIC_SPACE, strategy=kind, seed=2).optimize(quadratic, 6)
    assert [t.params for t in a.trials()] == [t.params for t in b.trials()]
    assert [t.params for t in a.trials()] != [t.params for t in c.trials()]
    assert all(t.params["units"] == int(t.params["units"]) for t in a.trials())


def test_sobol_first_power_of_two_is_balanced_and_warps_scales():
    pts = [qmc_point("sobol", 0, 2, i) for i in range(16)]
    for j in range(2):  # one point per sixteenth of each axis
        assert sorted(int(p[j] * 16) for p in pts) == list(range(16))
    space = {"lr": LogUniform(1e-4, 1.0)}
    s = Study(space, strategy=QuasiRandomSearch("sobol")).optimize(quadratic, 16)
    decades = sorted(int(-__import__("math").log10(t.params["lr"])) for t in s.trials())
    assert [decades.count(d) for d in range(4)] == [4, 4, 4, 4]  # each decade equally


def test_coarse_to_fine_with_a_sobol_first_stage():
    s = Study(QUADRATIC_SPACE, strategy=CoarseToFine(8, 3, sampler="sobol")).optimize(quadratic, 16)
    assert s.stages()[1]  # a box was computed
    assert "sampler='sobol'" in s.storage.get_study(s.name)["strategy"]


def test_export_csv_and_cli(tmp_path, capsys):
    db = str(tmp_path / "e.db")
    assert main([*SYNTH, "--storage", db, "--trials", "5"]) == 0
    assert main(["--report", db, "--csv", str(tmp_path / "t.csv")]) == 0
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["number", "stage", "status", "value", "params_lr", "params_beta"]
    assert [r["number"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert "diverged" in rows[2]["error"]


def test_trials_dataframe():
    pd = pytest.importorskip("pandas")
    df = Study(QUADRATIC_SPACE).optimize(quadratic, 5).trials_dataframe()
    assert isinstance(df, pd.DataFrame) and len(df) == 5 and "params_lr" in df


def test_ask_and_tell_matches_optimize(tmp_path):
    s = Study(QUADRATIC_SPACE, tmp_path / "a.db", seed=5)
    for _ in range(4):
        t = s.ask()
        assert t.status == "running"
        s.tell(t, quadratic(t.params, lambda *a: None))
    ref = Study(QUADRATIC_SPACE, seed=5).optimize(quadratic, 4)
    assert [(t.params, t.seed, t.value) for t in s.trials()] == [
        (t.params, t.seed, t.value) for t in ref.trials()
    ]
    bad = s.ask()
    assert s.tell(bad, float("nan")).status == "failed"
    with pytest.raises(ValueError, match="already failed"):
        s.tell(bad, 1.0)


# 9. plots
def test_plots_use_stored_scales_stages_and_the_metric(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from bnfast.tune import IntUniform, PowerOfTwo
    from bnfast.tune.results import plot_best_so_far, plot_params

    space = {"lr": LogUniform(1e-4, 1.0), "layers": IntUniform(2, 4),
             "batch_size": PowerOfTwo(16, 256)}  # fmt: skip
    db = tmp_path / "p.db"
    Study(space, db, strategy=CoarseToFine(6, 3), metric="validation accuracy").optimize(
        lambda p, r: -abs(p["layers"] - 3) - abs(p["lr"] - 0.01), 12
    )
    stored = Study.load(db)  # no space objects: the scales come from the file
    ts = stored.trials()
    fig = plot_params(ts, scales=stored.meta["scales"], metric=stored.metric)
    lr, layers, batch = fig.axes[:3]
    assert lr.get_xscale() == "log" and batch.get_xscale() == "log"
    assert {t.get_text() for t in batch.get_xticklabels()} <= {"16", "32", "64", "128", "256"}
    assert not batch.xaxis.get_minorticklocs().size
    assert all(float(x).is_integer() for x in layers.get_xticks())
    assert lr.get_ylabel() == "validation accuracy"
    assert fig.axes[-1].get_ylabel() == "stage"  # the colour bar
    plt.close(fig)
    fig = plot_best_so_far(ts, metric=stored.metric)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "validation accuracy"
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"] == [5.5]
    plt.close(fig)
    from bnfast.tune.results import save_plots

    save_plots(stored, tmp_path / "plots")  # no learning curves: no empty legend (a warning)


def test_importance_ranks_the_parameter_that_matters():
    pytest.importorskip("sklearn")
    from bnfast.tune import Choice

    space = {"lr": LogUniform(1e-4, 1.0), "x": Uniform(0, 1), "noise": Uniform(0, 1),
             "act": Choice(["relu", "tanh"])}  # fmt: skip

    def objective(p, r):
        return -((__import__("math").log10(p["lr"]) + 2) ** 2) - 0.2 * (p["x"] - 0.5) ** 2

    s = Study(space, seed=0).optimize(objective, 60)
    shares = s.importance()
    assert next(iter(shares)) == "lr" and shares["lr"] > 0.8
    assert shares["x"] > shares["noise"] and abs(sum(shares.values()) - 1) < 1e-9
    from bnfast.tune.results import summary

    assert "importance (fANOVA" in summary(s)


def test_cli_report_shows_importance_and_plots_it(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    db = str(tmp_path / "i.db")
    assert main([*SYNTH, "--storage", db, "--trials", "12"]) == 0
    capsys.readouterr()
    assert main(["--report", db, "--plot", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "importance (fANOVA main effects" in out and "lr " in out
    assert (tmp_path / "plots" / "importance.png").stat().st_size > 1000


def test_cli_searches_the_course_space(tmp_path, capsys):
    pytest.importorskip("sklearn")
    db = str(tmp_path / "k.db")
    args = ["--space", "course", "--trials", "2", "--epochs", "1", "--workers", "1"]
    assert main([*args, "--storage", db, "--no-progress"]) == 0
    ts = Study.load(db, "digits-course-random").trials()
    assert all(t.status == "complete" for t in ts)
    assert set(ts[0].params) == {"lr", "decay", "beta1", "beta2", "eps", "hidden", "layers",
                                 "batch_size"}  # fmt: skip
