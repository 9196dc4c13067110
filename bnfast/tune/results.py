"""Results: a table of the best trials, a study summary, and plots (optional matplotlib).

Plots: score against each parameter (log axis for log-scaled parameters; ``1 - beta`` on a log
axis for :class:`~bnfast.tune.spaces.OneMinusLogUniform`), the best score so far against the
trial number, and the learning curves of the top ``n`` trials. Each plotting function takes the
trials (and the space where the scale matters) and returns a matplotlib Figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bnfast.tune.spaces import OneMinusLogUniform, Param
from bnfast.tune.storage import TrialRecord

__all__ = [
    "best_so_far",
    "best_trials",
    "format_table",
    "fraction_reaching",
    "plot_best_so_far",
    "plot_curves",
    "plot_params",
    "save_plots",
    "summary",
]


def _sign(maximize: bool) -> float:
    return -1.0 if maximize else 1.0


def best_trials(
    trials: Sequence[TrialRecord], top: int | None = 10, maximize: bool = True
) -> list[TrialRecord]:
    """Complete trials, best first (ties by number)."""
    done = [t for t in trials if t.status == "complete" and t.value is not None]
    done.sort(key=lambda t: (_sign(maximize) * t.value, t.number))
    return done if top is None else done[:top]


def best_so_far(trials: Sequence[TrialRecord], maximize: bool = True) -> list[float]:
    """The best complete score among trials ``0..i`` for each trial ``i`` (NaN before any)."""
    out, best = [], math.nan
    for t in sorted(trials, key=lambda t: t.number):
        ok = t.status == "complete" and t.value is not None
        if ok and (math.isnan(best) or (t.value > best if maximize else t.value < best)):
            best = t.value
        out.append(best)
    return out


def fraction_reaching(trials: Sequence[TrialRecord], target: float, maximize: bool = True) -> float:
    """The fraction of all finished trials (failed ones count as misses) reaching ``target``."""
    done = [t for t in trials if t.done]
    if not done:
        return math.nan
    hit = sum(
        t.status == "complete"
        and t.value is not None
        and (t.value >= target if maximize else t.value <= target)
        for t in done
    )
    return hit / len(done)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(trials: Sequence[TrialRecord], top: int | None = 10, maximize: bool = True) -> str:
    """A text table of the ``top`` best complete trials."""
    rows = best_trials(trials, top, maximize)
    names: list[str] = []
    for t in rows:
        names += [k for k in t.params if k not in names]
    header = ["#", "stage", "score", *names, "seconds"]
    body = [
        [
            str(t.number),
            str(t.stage),
            _fmt(t.value),
            *(_fmt(t.params[k]) if k in t.params else "" for k in names),
            "" if t.duration is None else f"{t.duration:.2f}",
        ]
        for t in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(study: Any, top: int = 10) -> str:
    """Counts by status, stages, the best trials and the errors of failed trials."""
    trials = study.trials()
    info = study.storage.get_study(study.name) or {}
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    lines = [
        f"study {study.name!r} in {study.storage.path}: {len(trials)} trials "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        f"strategy {info.get('strategy', '?')}, seed {study.seed}, {study.direction}",
    ]
    for stage, box in study.stages().items():
        if box:
            lines.append(
                f"stage {stage} box (warped): "
                + ", ".join(f"{k} [{lo:.3f}, {hi:.3f}]" for k, (lo, hi) in sorted(box.items()))
            )
    if best_trials(trials, 1, study.maximize):
        lines += ["", format_table(trials, top, study.maximize)]
    failed = [t for t in trials if t.status == "failed"]
    if failed:
        lines.append("")
        for t in failed[:5]:
            last = (t.error or "").strip().splitlines()[-1:] or [""]
            lines.append(f"trial {t.number} failed: {last[0]}")
        if len(failed) > 5:
            lines.append(f"... and {len(failed) - 5} more failed trials")
    events = study.events()
    if events:
        lines.append("")
        for e in events:
            lines.append(f"trial {e['number']} after epoch {e['step']}: {e['kind']} {e['payload']}")
    return "\n".join(lines)


def _plt() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'bnfast[plot]'") from e
    return plt


def _param_names(trials: Sequence[TrialRecord]) -> list[str]:
    names: list[str] = []
    for t in trials:
        names += [k for k in t.params if k not in names]
    return names


def _scale(name: str, trials: Sequence[TrialRecord], space: Mapping[str, Param] | None) -> str:
    """ "linear", "log" or "one-minus-log" (log axis of 1 - value), from the space if known,
    else guessed from the values (a stored study has no space objects)."""
    if space is not None and name in space:
        p = space[name]
        return "one-minus-log" if isinstance(p, OneMinusLogUniform) else (
            "log" if p.log_scale else "linear"
        )  # fmt: skip
    vals = [t.params.get(name) for t in trials]
    vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not vals or min(vals) <= 0:
        return "linear"
    if max(vals) < 1 and min(vals) >= 0.5 and (1 - min(vals)) / (1 - max(vals)) >= 10:
        return "one-minus-log"
    return "log" if max(vals) / min(vals) >= 100 else "linear"


def plot_params(
    trials: Sequence[TrialRecord],
    space: Mapping[str, Param] | None = None,
    maximize: bool = True,
) -> Any:
    """Score against each parameter, one panel each, coloured by stage."""
    plt = _plt()
    done = [t for t in trials if t.status == "complete" and t.value is not None]
    names = _param_names(done) or ["(none)"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        ts = [t for t in done if name in t.params]
        xs = [t.params[name] for t in ts]
        scale = _scale(name, done, space)
        one_minus = scale == "one-minus-log"
        if one_minus:
            xs = [1.0 - x for x in xs]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if not numeric:
            cats = sorted({str(x) for x in xs})
            xs = [cats.index(str(x)) for x in xs]
            ax.set_xticks(range(len(cats)), cats)
        ax.scatter(xs, [t.value for t in ts], c=[t.stage for t in ts], s=14, cmap="viridis")
        if numeric and scale != "linear":
            ax.set_xscale("log")
        ax.set_xlabel(f"1 - {name}" if one_minus else name)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("score")
    fig.tight_layout()
    return fig


def plot_best_so_far(trials: Sequence[TrialRecord], maximize: bool = True) -> Any:
    """The best score so far against the trial number, over all scores."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ts = sorted(trials, key=lambda t: t.number)
    done = [t for t in ts if t.status == "complete" and t.value is not None]
    ax.scatter([t.number for t in done], [t.value for t in done], s=10, alpha=0.5, label="trial")
    ax.step([t.number for t in ts], best_so_far(ts, maximize), where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("score")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(trials: Sequence[TrialRecord], top: int = 5, maximize: bool = True) -> Any:
    """Learning curves of the ``top`` best trials."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for t in best_trials(trials, top, maximize):
        if t.curve:
            ax.plot([s for s, _ in t.curve], [v for _, v in t.curve], marker=".",
                    label=f"#{t.number}: {t.value:.4g}")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("reported value")
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def save_plots(
    study: Any, directory: str | Path, top: int = 5, space: Mapping[str, Param] | None = None
) -> list[Path]:
    """Write params.png, best_so_far.png and curves.png for ``study``; returns the paths."""
    plt = _plt()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trials = study.trials()
    space = space if space is not None else getattr(study, "space", None)
    space = space if isinstance(space, Mapping) else None
    figs = {
        "params.png": plot_params(trials, space, study.maximize),
        "best_so_far.png": plot_best_so_far(trials, study.maximize),
        "curves.png": plot_curves(trials, top, study.maximize),
    }
    paths = []
    for name, fig in figs.items():
        path = directory / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
