"""Results: a table of the best trials, a study summary, and plots (optional matplotlib).

Plots: score against each parameter on the parameter's own axis (stored with the study, so a
report draws what the search drew: log for :class:`~bnfast.tune.spaces.LogUniform`, base 2 with
the sizes as ticks for :class:`~bnfast.tune.spaces.PowerOfTwo`, integer ticks for
:class:`~bnfast.tune.spaces.IntUniform`, ``1 - beta`` on a log axis for
:class:`~bnfast.tune.spaces.OneMinusLogUniform`), coloured by stage with a colour bar; the best
score so far against the trial number with the stage boundaries marked; the learning curves of
the top ``n`` trials. The y axes name the study's metric. Each plotting function takes the
trials (and the scales where they matter) and returns a matplotlib Figure.
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
    "importance",
    "importance_table",
    "plot_best_so_far",
    "plot_curves",
    "plot_importance",
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


def _importance_or_none(trials: Sequence[TrialRecord]) -> dict[str, float] | None:
    """:func:`importance` when scikit-learn is there and 8 trials are complete, else None."""
    import importlib.util

    complete = sum(t.status == "complete" and t.value is not None for t in trials)
    if complete < 8 or importlib.util.find_spec("sklearn") is None:
        return None
    try:
        return importance(trials)
    except ValueError:
        return None


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
    meta = info.get("meta", {})
    ident = {"objective": meta.get("objective_version"), **meta.get("settings", {})}
    ident = {k: v for k, v in ident.items() if v is not None}
    if meta.get("pruner"):
        ident["pruner"] = meta["pruner"]
    if ident:
        lines.append("settings " + ", ".join(f"{k}={v}" for k, v in ident.items()))
    for stage, box in study.stages().items():
        if box:
            lines.append(
                f"stage {stage} box (warped): "
                + ", ".join(f"{k} [{lo:.3f}, {hi:.3f}]" for k, (lo, hi) in sorted(box.items()))
            )
    if best_trials(trials, 1, study.maximize):
        lines += ["", format_table(trials, top, study.maximize)]
    shares = _importance_or_none(trials)
    if shares and len(shares) > 1:
        lines += ["", "importance (fANOVA main effects, random-forest surrogate):",
                  importance_table(shares)]  # fmt: skip
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


def importance(
    trials: Sequence[TrialRecord],
    *,
    n_trees: int = 100,
    samples: int = 256,
    grid: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Hyperparameter importance: fANOVA main effects on a random-forest surrogate.

    A random forest (scikit-learn) is fitted to the complete trials' scores against their
    parameters in warped space (the unit coordinates the search sampled in; choices by their
    index). The importance of parameter ``j`` is the share of the surrogate's variance over the
    whole (uniform, warped) space explained by ``j`` alone, ``Var_v E[f | x_j = v] / Var f``
    (functional ANOVA's first-order term, Hutter et al. 2014), estimated on ``samples`` random
    points and a ``grid`` of values per parameter. The shares are normalised to sum to 1 (what
    interactions explain is spread in proportion). Returns ``{name: share}``, largest first.

    Why fANOVA rather than PED-ANOVA: fANOVA explains the score over the whole space with every
    trial, which is the course's question ("which hyperparameter matters"); PED-ANOVA asks
    which parameters separate the top quantile from the rest and needs a quantile choice,
    and with 30-60 trials its top 10% holds 3-6 trials.
    """
    import numpy as np

    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("importance needs scikit-learn: pip install scikit-learn") from e
    done = [t for t in trials if t.status == "complete" and t.value is not None]
    names = [n for n in _param_names(done) if all(n in t.params for t in done)]
    if len(done) < 4 or not names:
        raise ValueError(f"importance needs at least 4 complete trials, got {len(done)}")
    cols, levels = [], {}
    for n in names:
        if all(n in t.unit for t in done):
            cols.append([t.unit[n] for t in done])
        else:  # an unordered choice: its options' indices, sampled uniformly below
            opts = sorted({repr(t.params[n]) for t in done})
            levels[n] = len(opts)
            cols.append([(opts.index(repr(t.params[n])) + 0.5) / len(opts) for t in done])
    X = np.array(cols, dtype=float).T
    y = np.array([t.value for t in done], dtype=float)
    forest = RandomForestRegressor(n_estimators=n_trees, min_samples_leaf=2, random_state=seed)
    forest.fit(X, y)
    rng = np.random.default_rng(seed)
    base = rng.random((samples, len(names)))
    for j, n in enumerate(names):
        if n in levels:
            base[:, j] = (np.floor(base[:, j] * levels[n]) + 0.5) / levels[n]
    total = float(np.var(forest.predict(base)))
    shares = {}
    for j, n in enumerate(names):
        k = levels.get(n, grid)
        values = (np.arange(k) + 0.5) / k
        pts = np.repeat(base[None], k, axis=0)
        pts[:, :, j] = values[:, None]
        means = forest.predict(pts.reshape(-1, len(names))).reshape(k, samples).mean(axis=1)
        shares[n] = float(np.var(means))
    scale = sum(shares.values()) or 1.0
    if total <= 0.0:
        scale = 1.0
    return dict(sorted(((n, v / scale) for n, v in shares.items()), key=lambda kv: -kv[1]))


def importance_table(shares: Mapping[str, float]) -> str:
    """A text table of :func:`importance`'s shares, with a bar."""
    width = max([len(n) for n in shares] + [9])
    lines = [f"{'parameter':<{width}}  share", f"{'-' * width}  -----"]
    for n, v in shares.items():
        lines.append(f"{n:<{width}}  {v:5.1%}  {'#' * round(40 * v)}")
    return "\n".join(lines)


def plot_importance(shares: Mapping[str, float]) -> Any:
    """A bar plot of :func:`importance`'s shares."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(shares) + 1.0))
    names = list(shares)[::-1]
    ax.barh(names, [shares[n] for n in names])
    ax.set_xlabel("share of the score's variance (fANOVA main effect)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


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


def _scale(
    name: str,
    trials: Sequence[TrialRecord],
    space: Mapping[str, Param] | None,
    scales: Mapping[str, str] | None = None,
) -> str:
    """The parameter's axis (:attr:`bnfast.tune.spaces.Param.scale`): from the space, else the
    scales stored with the study, else guessed from the values (studies stored without)."""
    if space is not None and name in space:
        p = space[name]
        return "one-minus-log" if isinstance(p, OneMinusLogUniform) else p.scale
    if scales and name in scales:
        return scales[name]
    vals = [t.params.get(name) for t in trials]
    vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not vals or min(vals) <= 0:
        return "linear"
    if all(isinstance(v, int) for v in vals):
        pow2 = all(v & (v - 1) == 0 for v in vals) and max(vals) / min(vals) >= 4
        return "log2" if pow2 else "int"
    if max(vals) < 1 and min(vals) >= 0.5 and (1 - min(vals)) / (1 - max(vals)) >= 10:
        return "one-minus-log"
    return "log" if max(vals) / min(vals) >= 100 else "linear"


def plot_params(
    trials: Sequence[TrialRecord],
    space: Mapping[str, Param] | None = None,
    maximize: bool = True,
    *,
    scales: Mapping[str, str] | None = None,
    metric: str = "score",
) -> Any:
    """Score against each parameter, one panel each, coloured by stage (with a colour bar)."""
    from matplotlib.ticker import MaxNLocator, NullLocator

    plt = _plt()
    done = [t for t in trials if t.status == "complete" and t.value is not None]
    names = _param_names(done) or ["(none)"]
    stages = sorted({t.stage for t in done})
    staged = len(stages) > 1
    width = 3.2 * len(names) + (0.8 if staged else 0.0)
    fig, axes = plt.subplots(1, len(names), figsize=(width, 3.0), squeeze=False)
    points = None
    for ax, name in zip(axes[0], names):
        ts = [t for t in done if name in t.params]
        xs = [t.params[name] for t in ts]
        scale = _scale(name, done, space, scales)
        one_minus = scale == "one-minus-log"
        if one_minus:
            xs = [1.0 - x for x in xs]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if not numeric or scale == "choice":
            cats = sorted({str(x) for x in xs})
            xs = [cats.index(str(x)) for x in xs]
            ax.set_xticks(range(len(cats)), cats)
            numeric = False
        colour = dict(c=[t.stage for t in ts], cmap="viridis", vmin=stages[0], vmax=stages[-1])
        points = ax.scatter(xs, [t.value for t in ts], s=14, **(colour if staged else {}))
        if numeric and scale == "log2":
            ax.set_xscale("log", base=2)
            ticks = sorted(set(xs))
            ax.set_xticks(ticks, [str(int(v)) for v in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
        elif numeric and scale in ("log", "one-minus-log"):
            ax.set_xscale("log")
        elif numeric and scale == "int":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"1 - {name}" if one_minus else name)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(metric)
    fig.tight_layout()
    if staged and points is not None:
        bar = fig.colorbar(points, ax=list(axes[0]), ticks=stages, fraction=0.03, pad=0.02)
        bar.set_label("stage")
    return fig


def _stage_starts(trials: Sequence[TrialRecord]) -> list[int]:
    """The first trial number of each stage after the first."""
    first: dict[int, int] = {}
    for t in trials:
        first[t.stage] = min(first.get(t.stage, t.number), t.number)
    return [n for s, n in sorted(first.items()) if s > min(first)]


def plot_best_so_far(
    trials: Sequence[TrialRecord], maximize: bool = True, *, metric: str = "score"
) -> Any:
    """The best score so far against the trial number, over all scores; stages marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ts = sorted(trials, key=lambda t: t.number)
    done = [t for t in ts if t.status == "complete" and t.value is not None]
    ax.scatter([t.number for t in done], [t.value for t in done], s=10, alpha=0.5, label="trial")
    ax.step([t.number for t in ts], best_so_far(ts, maximize), where="post", label="best so far")
    for i, start in enumerate(_stage_starts(ts)):
        ax.axvline(start - 0.5, color="grey", linestyle=":", linewidth=1,
                   label="stage start" if i == 0 else None)  # fmt: skip
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(
    trials: Sequence[TrialRecord], top: int = 5, maximize: bool = True, *, metric: str = "score"
) -> Any:
    """Learning curves of the ``top`` best trials."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for t in best_trials(trials, top, maximize):
        if t.curve:
            ax.plot([s for s, _ in t.curve], [v for _, v in t.curve], marker=".",
                    label=f"#{t.number}: {t.value:.4g}")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if ax.get_lines():
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no learning curves reported", ha="center", transform=ax.transAxes)
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
    meta = getattr(study, "meta", None) or {}
    metric = meta.get("metric", "score")
    figs = {
        "params.png": plot_params(
            trials, space, study.maximize, scales=meta.get("scales"), metric=metric
        ),
        "best_so_far.png": plot_best_so_far(trials, study.maximize, metric=metric),
        "curves.png": plot_curves(trials, top, study.maximize, metric=metric),
    }
    shares = _importance_or_none(trials)
    if shares:
        figs["importance.png"] = plot_importance(shares)
    paths = []
    for name, fig in figs.items():
        path = directory / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
