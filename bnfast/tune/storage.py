"""Trial storage in one SQLite file (Python's :mod:`sqlite3`).

Only the driver process writes: workers return their results to it, so parallel workers never
contend for the file. Every write is its own committed transaction, so killing the driver at
any moment loses no finished trial; a trial that was running when the driver died stays
``running`` in the file and is run again on resume.

Tables: ``studies`` (one row per study: seed, direction, strategy, space description),
``trials`` (parameters, unit coordinates, seed, stage, status, score, metrics, learning curve,
timings, error), ``stages`` (the coarse-to-fine box of each stage) and ``events`` (panda mode:
hyperparameter changes and rewinds between epochs).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Storage", "TrialRecord"]

STATUSES = ("running", "complete", "pruned", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY, seed INTEGER NOT NULL, direction TEXT NOT NULL,
    strategy TEXT NOT NULL, space TEXT NOT NULL, created REAL NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    study TEXT NOT NULL, number INTEGER NOT NULL, stage INTEGER NOT NULL,
    params TEXT NOT NULL, unit TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL,
    value REAL, metrics TEXT NOT NULL, curve TEXT NOT NULL, error TEXT,
    started REAL, finished REAL, duration REAL, worker TEXT, attempts INTEGER NOT NULL,
    PRIMARY KEY (study, number));
CREATE TABLE IF NOT EXISTS stages (
    study TEXT NOT NULL, stage INTEGER NOT NULL, box TEXT NOT NULL,
    PRIMARY KEY (study, stage));
CREATE TABLE IF NOT EXISTS events (
    study TEXT NOT NULL, number INTEGER NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL,
    payload TEXT NOT NULL, time REAL NOT NULL);
"""


def _dumps(x: Any) -> str:
    # NaN/inf are not JSON: store them as null.
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(w) for k, w in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(w) for w in v]
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            return clean(v.item())
        return v

    return json.dumps(clean(x), sort_keys=False)


@dataclass
class TrialRecord:
    """One trial as stored."""

    number: int
    stage: int
    params: dict[str, Any]
    unit: dict[str, float]
    seed: int
    status: str = "running"
    value: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    duration: float | None = None
    worker: str | None = None
    attempts: int = 0

    @property
    def done(self) -> bool:
        """Finished for good (complete, pruned or failed): never run again on resume."""
        return self.status in ("complete", "pruned", "failed")


class Storage:
    """A study database: a path, or ``":memory:"`` (the default) for a throwaway study."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        # Close the connection when the Storage goes away (Python 3.13 warns otherwise).
        self._finalizer = weakref.finalize(self, self._con.close)
        if self.path != ":memory:":
            # WAL: readers (a report, a test) never block the driver's commits.
            self._con.execute("PRAGMA journal_mode=WAL")
        self._con.executescript(_SCHEMA)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # studies
    def get_study(self, name: str) -> dict[str, Any] | None:
        row = self._con.execute(
            "SELECT seed, direction, strategy, space, created, meta FROM studies WHERE name=?",
            (name,),
        ).fetchone()
        if row is None:
            return None
        seed, direction, strategy, space, created, meta = row
        return {
            "name": name,
            "seed": seed,
            "direction": direction,
            "strategy": strategy,
            "space": space,
            "created": created,
            "meta": json.loads(meta),
        }

    def create_study(
        self, name: str, seed: int, direction: str, strategy: str, space: str, meta: dict
    ) -> None:
        with self._con:
            self._con.execute(
                "INSERT INTO studies VALUES (?,?,?,?,?,?,?)",
                (name, seed, direction, strategy, space, time.time(), _dumps(meta)),
            )

    def set_meta(self, name: str, meta: dict) -> None:
        with self._con:
            self._con.execute("UPDATE studies SET meta=? WHERE name=?", (_dumps(meta), name))

    def study_names(self) -> list[str]:
        return [r[0] for r in self._con.execute("SELECT name FROM studies ORDER BY created")]

    # trials
    def put_trial(self, study: str, t: TrialRecord) -> None:
        """Insert or replace one trial (one committed transaction)."""
        with self._con:
            self._con.execute(
                "INSERT OR REPLACE INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    study,
                    t.number,
                    t.stage,
                    _dumps(t.params),
                    _dumps(t.unit),
                    int(t.seed),
                    t.status,
                    None if t.value is None or not math.isfinite(t.value) else float(t.value),
                    _dumps(t.metrics),
                    _dumps([[int(s), v] for s, v in t.curve]),
                    t.error,
                    t.started,
                    t.finished,
                    t.duration,
                    t.worker,
                    t.attempts,
                ),
            )

    def trial(self, study: str, number: int) -> TrialRecord | None:
        ts = self.trials(study, number)
        return ts[0] if ts else None

    def trials(self, study: str, number: int | None = None) -> list[TrialRecord]:
        q = (
            "SELECT number, stage, params, unit, seed, status, value, metrics, curve, error,"
            " started, finished, duration, worker, attempts FROM trials WHERE study=?"
        )
        args: tuple = (study,)
        if number is not None:
            q += " AND number=?"
            args += (int(number),)
        rows = self._con.execute(q + " ORDER BY number", args).fetchall()
        out = []
        for r in rows:
            curve = [(int(s), float("nan") if v is None else float(v)) for s, v in json.loads(r[8])]
            out.append(
                TrialRecord(
                    number=r[0],
                    stage=r[1],
                    params=json.loads(r[2]),
                    unit=json.loads(r[3]),
                    seed=r[4],
                    status=r[5],
                    value=r[6],
                    metrics=json.loads(r[7]),
                    curve=curve,
                    error=r[9],
                    started=r[10],
                    finished=r[11],
                    duration=r[12],
                    worker=r[13],
                    attempts=r[14],
                )
            )
        return out

    # coarse-to-fine boxes
    def put_stage(self, study: str, stage: int, box: dict[str, tuple[float, float]]) -> None:
        with self._con:
            self._con.execute(
                "INSERT OR REPLACE INTO stages VALUES (?,?,?)",
                (study, stage, _dumps({k: list(v) for k, v in box.items()})),
            )

    def stages(self, study: str) -> dict[int, dict[str, tuple[float, float]]]:
        rows = self._con.execute(
            "SELECT stage, box FROM stages WHERE study=? ORDER BY stage", (study,)
        )
        return {s: {k: (v[0], v[1]) for k, v in json.loads(b).items()} for s, b in rows}

    # panda events
    def add_event(self, study: str, number: int, step: int, kind: str, payload: dict) -> None:
        with self._con:
            self._con.execute(
                "INSERT INTO events VALUES (?,?,?,?,?,?)",
                (study, number, int(step), kind, _dumps(payload), time.time()),
            )

    def events(self, study: str, number: int | None = None) -> list[dict[str, Any]]:
        q = "SELECT number, step, kind, payload, time FROM events WHERE study=?"
        args: tuple = (study,)
        if number is not None:
            q += " AND number=?"
            args += (number,)
        rows = self._con.execute(q + " ORDER BY rowid", args)
        return [
            {"number": n, "step": s, "kind": k, "payload": json.loads(p), "time": t}
            for n, s, k, p, t in rows
        ]
