"""Panda mode: one model, trained epoch by epoch and watched.

The model comes from ``factory(params, seed)`` and has ``train_epoch(params, epoch)``, which
trains one epoch with the current hyperparameters and returns the validation score (or a
dict with ``"score"``). Between epochs the hyperparameters may change (:meth:`Panda.set`) and
the model may go back to the checkpoint taken after an earlier epoch (:meth:`Panda.rewind`).
Checkpoints are the model's ``state_dict()`` (restored with ``load_state_dict``) when it has
both, else a deep copy of the model. Everything is recorded in the study: the trial (its
current curve) and an event for each change and rewind.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from bnfast.tune.storage import TrialRecord
from bnfast.tune.strategies import trial_streams

__all__ = ["Panda", "sparkline"]

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """A one-line text chart of ``values``."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    return "".join(_BARS[min(7, int((v - lo) / span * 7.999))] for v in values)


class Panda:
    """Watch one model (see the module docstring). Create it with :meth:`Study.panda`.

    Parameters
    ----------
    study : Study
    factory : callable
        ``factory(params, seed) -> model``.
    params : dict
        The initial hyperparameters.
    out : file or None
        Where the per-epoch line (epoch, score, changes, curve) is printed; None for silence.
    """

    def __init__(
        self,
        study: Any,
        factory: Callable[[dict[str, Any], int], Any],
        params: Mapping[str, Any],
        *,
        out: IO[str] | None = sys.stdout,
    ) -> None:
        self.study = study
        self.number = study.next_number()
        _, seed = trial_streams(study.seed, self.number)
        self.params = dict(params)
        self.model = factory(dict(self.params), seed)
        self.epoch = 0
        self.out = out
        self._checkpoints: dict[int, Any] = {0: self._checkpoint()}
        self.record = TrialRecord(
            number=self.number,
            stage=0,
            params=dict(self.params),
            unit={},
            seed=seed,
            status="running",
            started=time.time(),
            attempts=1,
            metrics={"mode": "panda"},
        )
        self._t0 = time.perf_counter()
        self._save()

    @property
    def curve(self) -> list[tuple[int, float]]:
        return list(self.record.curve)

    def _checkpoint(self) -> Any:
        if hasattr(self.model, "state_dict") and hasattr(self.model, "load_state_dict"):
            return copy.deepcopy(self.model.state_dict())
        return copy.deepcopy(self.model)

    def _restore(self, ckpt: Any) -> None:
        if hasattr(self.model, "state_dict") and hasattr(self.model, "load_state_dict"):
            self.model.load_state_dict(copy.deepcopy(ckpt))
        else:
            self.model = copy.deepcopy(ckpt)

    def _save(self) -> None:
        self.record.duration = time.perf_counter() - self._t0
        self.study.storage.put_trial(self.study.name, self.record)

    def run(self, epochs: int = 1) -> list[tuple[int, float]]:
        """Train ``epochs`` more epochs; returns the curve so far."""
        for _ in range(int(epochs)):
            out = self.model.train_epoch(dict(self.params), self.epoch + 1)
            score = float(out["score"] if isinstance(out, Mapping) else out)
            self.epoch += 1
            self.record.curve.append((self.epoch, score))
            self.record.value = score
            self.record.params = dict(self.params)
            self._checkpoints[self.epoch] = self._checkpoint()
            self._save()
            if self.out is not None:
                vals = [v for _, v in self.record.curve]
                self.out.write(f"epoch {self.epoch:3d}  score {score:.4f}  {sparkline(vals)}\n")
                self.out.flush()
        return self.curve

    def set(self, **changes: Any) -> None:
        """Change hyperparameters from the next epoch on (recorded as a ``set`` event)."""
        old = {k: self.params.get(k) for k in changes}
        self.params.update(changes)
        self.record.params = dict(self.params)
        self.study.storage.add_event(
            self.study.name, self.number, self.epoch, "set", {"old": old, "new": changes}
        )
        self._save()
        if self.out is not None:
            self.out.write(f"after epoch {self.epoch}: {changes}\n")

    def rewind(self, epoch: int) -> None:
        """Go back to the checkpoint taken after ``epoch`` (0: the initial model).

        The hyperparameters stay as currently set; the curve after ``epoch`` is dropped from
        the trial and kept in the ``rewind`` event.
        """
        epoch = int(epoch)
        if epoch not in self._checkpoints or epoch > self.epoch:
            raise ValueError(f"no checkpoint after epoch {epoch}; have 0..{self.epoch}")
        self._restore(self._checkpoints[epoch])
        dropped = [(s, v) for s, v in self.record.curve if s > epoch]
        self.record.curve = [(s, v) for s, v in self.record.curve if s <= epoch]
        for e in [e for e in self._checkpoints if e > epoch]:
            del self._checkpoints[e]
        self.study.storage.add_event(
            self.study.name,
            self.number,
            self.epoch,
            "rewind",
            {"to": epoch, "dropped": dropped, "params": self.params},
        )
        self.epoch = epoch
        self.record.value = self.record.curve[-1][1] if self.record.curve else None
        self._save()
        if self.out is not None:
            self.out.write(f"rewound to epoch {epoch}\n")

    def finish(self) -> TrialRecord:
        """Mark the trial complete (score: the last epoch's)."""
        self.record.status = "complete" if self.record.curve else "failed"
        if not self.record.curve:
            self.record.error = "no epoch was trained"
        self.record.finished = time.time()
        self._save()
        return self.record

    def interact(
        self,
        epochs: int,
        input: Callable[[str], str] = input,
    ) -> TrialRecord:
        """Train up to ``epochs`` epochs, asking after each what to do.

        Answers: empty (next epoch), ``name=value`` (one or more, space separated: set),
        ``rewind N``, ``run N`` (N epochs without asking), ``stop``.
        """
        while self.epoch < epochs:
            self.run(1)
            while self.epoch < epochs:
                try:
                    line = input(f"[epoch {self.epoch}] enter/name=value/rewind N/run N/stop> ")
                except EOFError:
                    line = "stop"
                words = line.split()
                if not words:
                    break
                if words == ["stop"]:
                    return self.finish()
                if words[0] == "rewind" and len(words) == 2:
                    self.rewind(int(words[1]))
                elif words[0] == "run" and len(words) == 2:
                    self.run(min(int(words[1]), epochs - self.epoch))
                elif all("=" in w for w in words):
                    self.set(**dict(parse_assignment(w) for w in words))
                elif self.out is not None:
                    self.out.write(f"? {line!r}\n")
        return self.finish()


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"lr=1e-3"`` -> ``("lr", 0.001)``: int, float, true/false, else the string."""
    name, _, raw = text.partition("=")
    value: Any = raw
    low = raw.lower()
    if low in ("true", "false"):
        value = low == "true"
    else:
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                pass
    return name.strip(), value
