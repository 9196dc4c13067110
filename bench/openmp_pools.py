"""bnfast.torch's threading rule with one OpenMP pool or two: the drop-in cases around the
512 KiB threshold, timed with the rule (``torch_threads.MIN_BYTES``) at 512 KiB and at the
process-wide 4 MiB, interleaved in one process, beside PyTorch's own module or optimizer.

    python bench/openmp_pools.py [--threads 2] [--rounds 11] [--json PATH]

A source build loads the system's ``libgomp.so.1``, the name PyTorch's bundled copy has too, so
the process has one runtime and one pool; a repaired wheel loads its renamed copy
(``bnfast.libs/libgomp-*.so.1``) beside PyTorch's, two pools. The script prints which: run it
with each install (alternating, on a shared machine) and compare the rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import bnfast
import bnfast.torch.bench as tb
from bnfast.bench.cases import Impl
from bnfast.bench.timing import interleaved
from bnfast.torch._fallback import torch_threads

# (kernel, shape): bytes moved per call from 1 MiB (threaded by the 512 KiB rule only) to 32 MiB
# (threaded by either), and an optimizer step over 1e5 parameters (2.8 MB).
CASES = [
    ("batch_norm_eval", (256, 1024)),
    ("batch_norm_train", (256, 1024)),
    ("batch_norm_backward", (256, 1024)),
    ("adam", (100_000,)),
    ("batch_norm_train", (8192, 1024)),
]
RULES = {"512K": 512 << 10, "4M": 4 << 20}


def with_rule(fn, min_bytes: int):
    def call() -> object:
        old = torch_threads.MIN_BYTES
        torch_threads.MIN_BYTES = min_bytes
        try:
            return fn()
        finally:
            torch_threads.MIN_BYTES = old

    return call


def openmp_runtimes() -> list[str]:
    maps = Path("/proc/self/maps").read_text().splitlines()
    return sorted({Path(line.split()[-1]).name for line in maps if "libgomp" in line})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--json")
    args = p.parse_args()
    tb.set_num_threads(args.threads)
    torch.ones(64, 64).sum()  # both runtimes loaded and started
    runtimes = openmp_runtimes()
    print(f"bnfast {bnfast.__version__} from {Path(bnfast.__file__).parent}")
    print(f"torch {torch.__version__}, threads {args.threads}, OpenMP runtimes: {runtimes}")
    rows = []
    for kernel, shape in CASES:
        impl = "torch-fused" if kernel in ("sgd_momentum", "adam", "adamw") else "torch"
        items = {"torch": Impl(tb.make(kernel, shape, impl))}
        ours = tb.make(kernel, shape, "bnfast.torch")
        for name, mb in RULES.items():
            items[name] = Impl(with_rule(ours, mb))
        s = interleaved(items, args.rounds, 2e-3)
        med = {k: statistics.median(v) * 1e6 for k, v in s.items()}
        ratio = statistics.median(a / b for a, b in zip(s["4M"], s["512K"]))
        rows.append({"kernel": kernel, "shape": "x".join(map(str, shape)), **med,
                     "4M/512K": ratio})  # fmt: skip
        print(f"{kernel:20} {rows[-1]['shape']:>10}  torch {med['torch']:8.1f} µs  "
              f"512K {med['512K']:8.1f} µs  4M {med['4M']:8.1f} µs  4M/512K {ratio:.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"runtimes": runtimes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
