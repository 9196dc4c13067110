"""Per-row medians over several ``bnfast bench --json`` runs, as a Markdown table.

One run on a shared VM moves single rows by 10-30%; the median over a few runs taken minutes
apart is steadier. For each large shape (and the cross-entropy shapes) the fastest bnfast ISA
of each run is taken, then the median of its % of speed of light, its ratio to NumPy (1 thread)
and to PyTorch (1 and 2 threads) over the runs.

    python tools/bench_median.py bench/results/*-run5.json bench/results/*-run6.json ...
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

_ALWAYS = ("4096x1000", "65536x10")  # compute-bound, not "large" by bytes, still reported


def _best_rows(run: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The fastest bnfast implementation of each (kernel, shape, threads) row of one run."""
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in run["rows"]:
        if not r["impl"].startswith("bnfast"):
            continue
        key = (r["kernel"], r["shape"], r["threads"])
        if key not in best or r["median_s"] < best[key]["median_s"]:
            best[key] = r
    return best


def table(runs: list[dict[str, Any]]) -> str:
    """The Markdown table of per-row medians over ``runs``."""
    bests = [_best_rows(r) for r in runs]
    large = {(r["kernel"], r["shape"]): r["large"] for r in runs[0]["rows"]}
    lines = [
        "| kernel | shape | speed of light (1 / 2 thr) | vs NumPy (1 thr) | vs PyTorch (1 / 2 thr) |",
        "|---|---|--:|--:|--:|",
    ]
    seen = set()
    for kernel, shape, _ in bests[0]:
        if (kernel, shape) in seen or not (large[kernel, shape] or shape in _ALWAYS):
            continue
        seen.add((kernel, shape))

        def med(field: str, threads: int, spec: str, row=(kernel, shape)) -> str:
            vals = [b[(*row, threads)].get(field) for b in bests]
            vals = [v for v in vals if v is not None]
            return "" if not vals else format(statistics.median(vals), spec)

        sol = f"{med('sol_share', 1, '.0%')} / {med('sol_share', 2, '.0%')}"
        torch = f"{med('vs_torch', 1, '.2f')}x / {med('vs_torch', 2, '.2f')}x"
        numpy = f"{med('vs_numpy', 1, '.1f')}x"
        lines.append(f"| {kernel} | {shape} | {sol} | {numpy} | {torch} |")
    return "\n".join(lines)


def _load(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


if __name__ == "__main__":
    print(table([_load(path) for path in sys.argv[1:]]))
