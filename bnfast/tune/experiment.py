"""The experiment that ties the course together: how forgiving is batch norm of the learning rate?

The same network is trained with and without batch norm on the same sampled configurations
(learning rate log-uniform in [1e-4, 1], Adam's beta1 by ``1 - beta1`` log-uniform in
[1e-3, 1e-1]); the same study seed gives both arms the same parameters and the same training
seeds, trial by trial. The result is the fraction of configurations that reach a target
validation accuracy in each arm, and a plot of accuracy against learning rate for both.

:func:`compare` is the generic part (any objectives, any space); :func:`batchnorm_experiment`
runs it on the digits network (which needs :mod:`bnfast.tune.digits`'s dependencies).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnfast.tune.results import _plt, best_trials, fraction_reaching
from bnfast.tune.runner import Objective
from bnfast.tune.spaces import LogUniform, OneMinusLogUniform, Space
from bnfast.tune.study import Study

__all__ = ["batchnorm_experiment", "compare", "compare_text", "plot_compare"]


def compare(
    objectives: Mapping[str, Objective],
    space: Space,
    n_trials: int,
    *,
    storage: Any = None,
    prefix: str = "",
    seed: int = 0,
    objective_version: str | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    metric: str = "score",
    **optimize_kw: Any,
) -> dict[str, Study]:
    """Run each objective on the same ``n_trials`` configurations (one study per label).

    ``objective_version`` and ``settings[label]`` are stored with (and checked against) each
    study, see :class:`Study`.
    """
    from bnfast.tune.storage import Storage

    st = storage if isinstance(storage, Storage) else Storage(storage or ":memory:")
    out = {}
    for label, obj in objectives.items():
        study = Study(
            space, st, name=f"{prefix}{label}", seed=seed, objective_version=objective_version,
            settings=(settings or {}).get(label), metric=metric,
        )  # fmt: skip
        out[label] = study.optimize(obj, n_trials, **optimize_kw)
    return out


def compare_text(studies: Mapping[str, Study], target: float) -> str:
    """Fraction reaching ``target`` per arm, and the paired count (same configuration)."""
    lines = []
    for label, s in studies.items():
        ts = s.trials()
        frac = fraction_reaching(ts, target, s.maximize)
        best = best_trials(ts, 1, s.maximize)
        best_txt = f"{best[0].value:.4f}" if best else "-"
        lines.append(
            f"{label:>12}: {frac:6.1%} of {len(ts)} configurations reach {target:g}"
            f" (best {best_txt}, failed {sum(t.status == 'failed' for t in ts)})"
        )
    labels = list(studies)
    if len(labels) == 2:
        a, b = (studies[k].trials() for k in labels)
        hit = [
            {t.number for t in ts if t.status == "complete" and t.value is not None
             and t.value >= target}
            for ts in (a, b)
        ]  # fmt: skip
        lines.append(
            f"paired: {len(hit[0] - hit[1])} reach only with {labels[0]}, "
            f"{len(hit[1] - hit[0])} only with {labels[1]}, {len(hit[0] & hit[1])} with both"
        )
    return "\n".join(lines)


def plot_compare(
    studies: Mapping[str, Study], param: str = "lr", target: float | None = None
) -> Any:
    """Score against ``param`` (log axis) for each arm; failed trials drawn at the bottom."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, s in studies.items():
        ts = [t for t in s.trials() if param in t.params]
        ok = [t for t in ts if t.status == "complete"]
        ax.scatter([t.params[param] for t in ok], [t.value for t in ok], s=16, label=label)
        bad = [t for t in ts if t.status != "complete"]
        if bad:
            ax.scatter([t.params[param] for t in bad], [0.0] * len(bad), marker="x", s=16,
                       label=f"{label} (failed)")  # fmt: skip
    if target is not None and not math.isnan(target):
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel("validation accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def batchnorm_experiment(
    n_trials: int = 40,
    epochs: int = 5,
    target: float = 0.95,
    *,
    storage: Any = None,
    seed: int = 0,
    plot: str | Path | None = None,
    isa: str | None = None,
    **optimize_kw: Any,
) -> tuple[dict[str, Study], str]:
    """Digits network with and without batch norm over the same sampled (lr, beta1).

    ``isa`` pins the kernels' instruction set (None: the active one); it is part of both
    studies' identity, as the numbers depend on it. Returns the two studies (``"batchnorm"`` and ``"plain"``, stored as ``bn-batchnorm`` and
    ``bn-plain``) and the text result; writes the accuracy-vs-learning-rate plot to ``plot``.
    """
    from bnfast.tune import digits

    space = {"lr": LogUniform(1e-4, 1.0), "beta1": OneMinusLogUniform(0.9, 0.999)}
    settings = {
        "batchnorm": digits.settings(epochs, isa=isa, batch_norm=True),
        "plain": digits.settings(epochs, isa=isa, batch_norm=False),
    }
    objectives = {k: functools.partial(digits.objective, **v) for k, v in settings.items()}
    studies = compare(objectives, space, n_trials, storage=storage, prefix="bn-", seed=seed,
                      objective_version=digits.VERSION, settings=settings, metric=digits.METRIC,
                      **optimize_kw)  # fmt: skip
    text = compare_text(studies, target)
    if plot is not None:
        fig = plot_compare(studies, "lr", target)
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=100)
        _plt().close(fig)
    return studies, text
