"""``bnfast bench``: every kernel against its speed of light, NumPy and PyTorch, in one process.

The command line: the options, the tables on stdout, ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bnfast.bench.cases import cases, torch_peers
from bnfast.bench.report import format_dropin, format_table, summary
from bnfast.bench.runner import dropin, run

__all__ = ["KERNELS", "add_parser", "main"]

KERNELS = tuple(dict.fromkeys(c.kernel for c in cases(quick=True)))  # the case ids, in order


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _threads_arg(text: str) -> list[int]:
    try:
        vals = [int(s) for s in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return vals


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--kernels", type=_csv, default=None, metavar="GLOBS",
                   help="comma-separated case id globs: " + ",".join(KERNELS)
                   + " (default all)")  # fmt: skip
    p.add_argument("--shapes", type=_csv, default=None, metavar="GLOBS",
                   help="shape label globs, e.g. 8192x1024,nchw-*,1e7* (default all)")  # fmt: skip
    p.add_argument("--impls", type=_csv, default=None, metavar="GLOBS",
                   help="implementation globs: bnfast-avx512,bnfast-*,numpy,torch")  # fmt: skip
    p.add_argument("--threads", type=_threads_arg, default=None, metavar="N,M",
                   help="thread counts (default 1 and all cores)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=None,
                   help="samples per implementation, interleaved (default 11; quick 3)")  # fmt: skip
    p.add_argument("--min-sample-ms", type=float, default=None,
                   help="each sample lasts at least this long (default 2; quick 0.2)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny shapes, few rounds: a smoke run")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--all-rows", action="store_true",
                   help="print every implementation (each ISA), not only the fastest bnfast")  # fmt: skip
    p.add_argument("--no-overhead", action="store_true", help="skip the per-call overheads")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--torch-dropin", action="store_true",
                   help="also time the bnfast.torch drop-ins beside PyTorch's own modules, "
                        "cross_entropy and optimizers, eager and under torch.compile "
                        "(needs PyTorch; the compiles take a few minutes)")  # fmt: skip
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``bnfast`` command's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="time every kernel vs its speed of light, NumPy and PyTorch",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _configure(p)
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    """Run ``bnfast bench`` with parsed arguments; prints the table, writes ``--json``."""

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(
        kernels=args.kernels,
        shapes=args.shapes,
        impls=args.impls,
        threads=args.threads,
        quick=args.quick,
        rounds=args.rounds,
        min_sample=None if args.min_sample_ms is None else args.min_sample_ms / 1e3,
        with_overhead=not args.no_overhead,
        progress=None if args.quiet else progress,
    )
    print(format_table(result, all_rows=args.all_rows))
    s = summary(result)
    if s:
        print("\n" + s)
    if args.torch_dropin:
        if torch_peers() is None:
            print("\n--torch-dropin: PyTorch is not installed", file=sys.stderr)
        else:
            result["dropin"] = dropin(
                threads=args.threads,
                kernels=args.kernels,
                progress=None if args.quiet else progress,
                compiled=True,
            )
            print("\nPyTorch drop-in (bnfast.torch) vs PyTorch, training-loop calls:\n")
            print(format_dropin(result["dropin"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0
