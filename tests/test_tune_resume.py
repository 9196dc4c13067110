"""Storage and resume: a killed search loses no finished trial and repeats none."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from bnfast.tune import Storage, Study, TrialRecord
from bnfast.tune.synthetic import QUADRATIC_SPACE, quadratic

CMD = [
    "-m",
    "bnfast.tune.cli",
    "--objective",
    "bnfast.tune.synthetic:slow_logged",
    "--space",
    "bnfast.tune.synthetic:QUADRATIC_SPACE",
    "--trials",
    "12",
    "--workers",
    "2",
    "--seed",
    "3",
    "--no-progress",
]


def _rows(db):
    con = sqlite3.connect(db)
    try:
        return {
            n: (s, f, a)
            for n, s, f, a in con.execute("SELECT number, status, finished, attempts FROM trials")
        }
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        con.close()


def test_kill_mid_search_then_resume(tmp_path):
    db, log = str(tmp_path / "runs.db"), tmp_path / "executed.txt"
    env = {**os.environ, "BNFAST_TUNE_SLEEP": "0.2", "BNFAST_TUNE_LOG": str(log)}
    cmd = [sys.executable, *CMD, "--storage", db]
    err = open(tmp_path / "stderr.txt", "wb")  # noqa: SIM115
    # Outside the source tree, so the subprocess imports the installed package.
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(s == "complete" for s, _, _ in _rows(db).values()) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone: the assert says why
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes
        proc.wait()
        err.close()
    before = _rows(db)
    done_before = {n: f for n, (s, f, _) in before.items() if s == "complete"}
    assert 3 <= len(done_before) < 12
    assert any(s == "running" for s, _, _ in before.values())  # killed mid-search
    executed_before = log.read_text().split()

    subprocess.run(cmd, env=env, check=True, timeout=120, capture_output=True, cwd=tmp_path)
    after = _rows(db)
    assert sorted(after) == list(range(12))
    assert all(s == "complete" for s, _, _ in after.values())
    for n, finished in done_before.items():
        assert after[n] == ("complete", finished, 1)  # untouched
    executed_after = log.read_text().split()[len(executed_before) :]
    assert not set(map(int, executed_after)) & set(done_before)  # nothing finished re-ran
    assert set(map(int, executed_before + executed_after)) == set(range(12))
    # the resumed study is the same as an uninterrupted one
    fresh = Study(QUADRATIC_SPACE, seed=3).optimize(quadratic, 12, workers=1)
    resumed = Study.load(db, "slow_logged-random")
    assert [(t.params, t.seed, t.value) for t in resumed.trials()] == [
        (t.params, t.seed, t.value) for t in fresh.trials()
    ]
    # running it a third time does nothing
    subprocess.run(cmd, env=env, check=True, timeout=120, capture_output=True, cwd=tmp_path)
    assert _rows(db) == after


def test_running_trials_rerun_with_same_params(tmp_path):
    db = tmp_path / "s.db"
    s = Study(QUADRATIC_SPACE, db, seed=1).optimize(quadratic, 4, workers=1)
    t2 = s.trials()[2]
    stale = TrialRecord(2, 0, t2.params, t2.unit, t2.seed, "running", attempts=1)
    s.storage.put_trial(s.name, stale)  # as if the driver died while trial 2 ran
    s.storage.close()
    s = Study(QUADRATIC_SPACE, db, seed=1).optimize(quadratic, 4, workers=1)
    t2b = s.trials()[2]
    assert t2b.status == "complete" and t2b.attempts == 2
    assert (t2b.params, t2b.seed, t2b.value) == (t2.params, t2.seed, t2.value)
    assert [t.attempts for t in s.trials()] == [1, 1, 2, 1]


def test_storage_round_trip_and_several_studies(tmp_path):
    st = Storage(tmp_path / "x.db")
    st.create_study("a", 1, "maximize", "random", "{}", {})
    rec = TrialRecord(
        0, 1, {"lr": 0.1, "act": "relu", "ok": True}, {"lr": 0.5}, 42, "complete", 0.9,
        {"loss": float("nan")}, [(1, 0.5), (2, float("inf"))], None, 1.0, 2.0, 1.0, "w", 1,
    )  # fmt: skip
    st.put_trial("a", rec)
    back = st.trial("a", 0)
    assert (
        back.params == rec.params and back.curve[0] == (1, 0.5) and back.metrics == {"loss": None}
    )
    assert back.curve[1][0] == 2 and back.curve[1][1] != back.curve[1][1]  # non-finite -> NaN
    assert st.trials("b") == [] and st.study_names() == ["a"]
    st.put_stage("a", 1, {"lr": (0.25, 0.5)})
    assert st.stages("a") == {1: {"lr": (0.25, 0.5)}}
    st.close()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Study.load(tmp_path / "missing.db")
    Storage(tmp_path / "empty.db").close()
    with pytest.raises(ValueError, match="no study"):
        Study.load(tmp_path / "empty.db")


def test_objective_version_is_part_of_the_identity(tmp_path):
    from bnfast.tune import StudyMismatch

    db = tmp_path / "v.db"
    Study(QUADRATIC_SPACE, db, name="s", objective_version="q-1").close()
    again = Study(QUADRATIC_SPACE, db, name="s", objective_version="q-1")  # resumes
    assert Study.load(again.storage, "s").objective_version == "q-1"
    again.close()
    with pytest.raises(StudyMismatch, match=r"objective version 'q-1', not 'q-2'.*--storage FILE"):
        Study(QUADRATIC_SPACE, db, name="s", objective_version="q-2")
    # A study stored before versions were recorded is another version too.
    Study(QUADRATIC_SPACE, db, name="old").close()
    with pytest.raises(StudyMismatch, match=r"version \(none recorded\), not 'q-2'"):
        Study(QUADRATIC_SPACE, db, name="old", objective_version="q-2")


def test_cli_refuses_a_study_of_another_objective_version(tmp_path, capsys):
    """The digits objective's studies carry its version; an older one is refused, not mixed."""
    from bnfast.tune import digits
    from bnfast.tune.cli import main

    db = str(tmp_path / "old.db")
    Study(QUADRATIC_SPACE, db, name="bn-batchnorm").close()  # as stored before versions
    args = ["--experiment", "batchnorm", "--trials", "1", "--epochs", "1", "--workers", "1"]
    assert main([*args, "--storage", db, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"not {digits.VERSION!r}" in err and "--storage FILE" in err
