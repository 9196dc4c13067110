"""Output: the Markdown tables and the summary of a :func:`bnfast.bench.run` result."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnfast.bench.cases import Case

__all__ = ["case_line", "format_dropin", "format_table", "summary"]


def _fmt_time(t: float) -> str:
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} µs"


def _fmt_ratio(r: float | None) -> str:
    return "" if r is None else f"{r:.2f}x"


def case_line(rows: list[dict[str, Any]], case: Case, nt: int) -> str:
    mine = [r for r in rows if r["kernel"] == case.kernel and r["shape"] == case.shape]
    mine = [r for r in mine if r["threads"] == nt]
    parts = [f"{r['impl']} {_fmt_time(r['median_s'])}" for r in mine]
    return f"{case.kernel} {case.shape} t={nt}: " + ", ".join(parts)


def _groups(result: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, dict[str, Any]]]:
    """Rows by (kernel, shape, threads), then by implementation."""
    groups: dict[tuple[str, str, int], dict[str, dict[str, Any]]] = {}
    for r in result["rows"]:
        groups.setdefault((r["kernel"], r["shape"], r["threads"]), {})[r["impl"]] = r
    return groups


def _best(g: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    mine = [r for k, r in g.items() if k.startswith("bnfast-")]
    return min(mine, key=lambda r: r["median_s"]) if mine else None


def _compact_lines(result: dict[str, Any]) -> list[str]:
    """One line per case and thread count: the fastest bnfast ISA beside SOL, NumPy, PyTorch."""
    head = ("| kernel | shape | thr | SOL | bnfast (best ISA) | GB/s | % SOL | NumPy | PyTorch "
            "| vs NumPy | vs PyTorch |")  # fmt: skip
    lines = [head, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for (kernel, shape, nt), g in _groups(result).items():
        sol = g["speed-of-light"]
        best = _best(g)
        np_r, t_r = g.get("numpy"), g.get("torch")

        def t(r: dict[str, Any] | None) -> str:
            return "" if r is None else _fmt_time(r["median_s"])

        cells = [kernel, shape, str(nt), t(sol)]
        if best is None:
            cells += ["", "", "", t(np_r), t(t_r), "", ""]
        else:
            isa = best["impl"].removeprefix("bnfast-")
            cells += [f"{t(best)} ({isa})", f"{best['gbps']:.1f}",
                      f"{100 * best['sol_share']:.0f}", t(np_r), t(t_r),
                      _fmt_ratio(best["vs_numpy"]), _fmt_ratio(best["vs_torch"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _floor_lines(result: dict[str, Any]) -> list[str]:
    """The cases with a compute floor: SOL, floor and the fastest bnfast ISA."""
    lines = []
    for (kernel, shape, nt), g in _groups(result).items():
        best = _best(g)
        if best is None or best.get("floor_s") is None:
            continue
        sol = g["speed-of-light"]["median_s"]
        lines.append(f"| {kernel} | {shape} | {nt} | {_fmt_time(sol)} | "
                     f"{_fmt_time(best['floor_s'])} ({best['floor_pattern']}) | "
                     f"{_fmt_time(best['median_s'])} | {100 * best['sol_share']:.0f} | "
                     f"{100 * best['floor_share']:.0f} |")  # fmt: skip
    if not lines:
        return []
    return [
        "",
        "Compute floor (bnfast's exp of every logit and nothing else; % = floor / bnfast):",
        "",
        "| kernel | shape | thr | SOL | compute floor | bnfast | % SOL | % floor |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
        *lines,
    ]


def format_table(result: dict[str, Any], all_rows: bool = False) -> str:
    """A Markdown table (one line per case and thread count, or every row with ``all_rows``),
    then the byte formulas and the per-call overheads."""
    head = "| kernel | shape | thr | impl | median | GB/s | % SOL | vs NumPy | vs PyTorch |"
    lines = [head, "|---|---|--:|---|--:|--:|--:|--:|--:|"]
    if not all_rows:
        lines = _compact_lines(result)
    for r in result["rows"] if all_rows else []:
        impl = r["impl"] + (f" ({r['variant']})" if r["impl"] == "speed-of-light" else "")
        lines.append(
            f"| {r['kernel']} | {r['shape']} | {r['threads']} | {impl} | "
            f"{_fmt_time(r['median_s'])} | {r['gbps']:.1f} | {100 * r['sol_share']:.0f} | "
            f"{_fmt_ratio(r['vs_numpy'])} | {_fmt_ratio(r['vs_torch'])} |"
        )
    lines += _floor_lines(result)
    formulas: dict[str, str] = {}
    for r in result["rows"]:
        formulas.setdefault(f"{r['kernel']} {r['shape']}", f"{r['bytes_formula']} "
                            f"= {r['bytes'] / 1e6:.2f} MB; SOL {r['sol_pattern']}")  # fmt: skip
    lines += [
        "",
        "Bytes that must move (n elements: 4 bytes each in float32, 2 in bfloat16), speed of light:",
    ]
    lines += [f"- {k}: {v}" for k, v in formulas.items()]
    if result.get("skipped"):
        lines += ["", "No bnfast kernel in this build for: " + ", ".join(result["skipped"])]
    if result.get("overhead"):
        lines += ["", "| per-call overhead (tiny input, 1 thread) | median |", "|---|--:|"]
        lines += [f"| {o['binding']} | {o['median_us']:.2f} µs |" for o in result["overhead"]]
    m = result["machine"]
    lines += [
        "",
        f"{m['date']} on {m['cpu']} ({m['cpus']} CPUs), bnfast {m['bnfast']}, NumPy {m['numpy']}"
        + (f", PyTorch {m['torch']}" if m["torch"] else ", no PyTorch")
        + ". vs X = median over rounds of X's time / this row's time (above 1: faster than X);"
        " % SOL = the same with the speed of light.",
    ]
    return "\n".join(lines)


def summary(result: dict[str, Any]) -> str:
    """Geometric means over the large shapes of the best bnfast ISA, per thread count."""
    out = []
    for nt in result["settings"]["threads"]:
        best: dict[tuple[str, str], dict[str, Any]] = {}
        for r in result["rows"]:
            if r["threads"] != nt or not r["impl"].startswith("bnfast-"):
                continue
            key = (r["kernel"], r["shape"])
            if key not in best or r["median_s"] < best[key]["median_s"]:
                best[key] = r
        for what, field in (("% SOL", "sol_share"), ("vs NumPy", "vs_numpy"),
                            ("vs PyTorch", "vs_torch")):  # fmt: skip
            for scope, rows in (("large", [r for r in best.values() if r["large"]]),
                                ("all", list(best.values()))):  # fmt: skip
                vals = [r[field] for r in rows if r[field]]
                if vals:
                    g = math.exp(sum(math.log(v) for v in vals) / len(vals))
                    shown = f"{100 * g:.0f}%" if field == "sol_share" else f"{g:.2f}x"
                    out.append(f"threads={nt} {scope} shapes, geomean {what}: {shown}")
    return "\n".join(out)


def format_dropin(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`dropin` rows (compiled columns where any row has them)."""
    comp = any("torch-compiled" in r for r in rows)
    head = "| step | shape | thr | PyTorch | PyTorch fused | bnfast.torch | speed-up |"
    rule = "|---|---|--:|--:|--:|--:|--:|"
    if comp:
        head += " compiled PyTorch | compiled bnfast.torch | compiled speed-up |"
        rule += "--:|--:|--:|"
    lines = [head, rule]

    def cell(r: dict[str, Any], key: str) -> str:
        return "" if r.get(key) is None else _fmt_time(r[key])

    for r in rows:
        line = (
            f"| {r['kernel']} | {r['shape']} | {r['threads']} | {_fmt_time(r['torch'])} | "
            f"{cell(r, 'torch-fused')} | {_fmt_time(r['bnfast.torch'])} | "
            f"{r['speedup']:.2f}x |"
        )
        if comp:
            sp = r.get("compiled_speedup")
            line += (
                f" {cell(r, 'torch-compiled')} | {cell(r, 'bnfast.torch-compiled')} | "
                f"{'' if sp is None else f'{sp:.2f}x'} |"
            )
        lines.append(line)
    shares = [r for r in rows if r.get("kernel_share") is not None]
    if shares:
        lines.append("")
        lines += [
            f"{r['kernel']} {r['shape']}, {r['threads']} thread(s): bnfast's kernels take "
            f"{100 * r['kernel_share']:.0f}% of the bnfast.torch step"
            for r in shares
        ]
    return "\n".join(lines)
