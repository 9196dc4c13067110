"""`bnfast bench --quick` end to end: tiny shapes, the JSON's fields. No timing assertions."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import pytest

import bnfast
from bnfast import bench
from bnfast.bench.cases import OPTIMIZER_CASES
from bnfast.cli import main

ROW_FIELDS = {
    "kernel", "shape", "dtype", "threads", "impl", "variant", "median_s", "samples_s", "bytes",
    "bytes_formula", "gbps", "sol_s", "sol_share", "sol_pattern", "vs_numpy", "vs_torch", "large",
    "floor_s", "floor_share", "floor_pattern",
}  # fmt: skip


def test_quick_cli_json(tmp_path, capsys, threads):
    path = tmp_path / "bench.json"
    # one kernel per family keeps the test short; every case is exercised by the next test
    argv = ["bench", "--quick", "--quiet", "--kernels", "batch_norm_*,softmax_cross_entropy,adam",
            "--rounds", "2", "--threads", "1,2", "--json", str(path)]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| kernel | shape | thr | SOL | bnfast (best ISA) |" in table
    assert "Bytes that must move" in table
    result = json.loads(path.read_text())
    assert set(result) >= {"machine", "settings", "rows", "overhead", "skipped"}
    assert result["machine"]["isas"] == bnfast.available_isas()
    assert result["settings"]["threads"] == [1, 2]
    rows = result["rows"]
    for r in rows:
        assert set(r) >= ROW_FIELDS
        assert r["median_s"] > 0 and math.isfinite(r["gbps"]) and r["sol_s"] > 0
        assert r["bytes"] > 0 and r["bytes_formula"]
    seen = {(r["kernel"], r["threads"], r["impl"]) for r in rows}
    for kernel in ("batch_norm_train", "batch_norm_eval", "batch_norm_backward"):
        for nt in (1, 2):
            assert (kernel, nt, "speed-of-light") in seen
            assert (kernel, nt, "numpy") in seen
            for isa in bnfast.available_isas():
                assert (kernel, nt, f"bnfast-{isa}") in seen
    sol = [r for r in rows if r["impl"] == "speed-of-light"]
    assert all(r["sol_share"] == pytest.approx(1.0) for r in sol)
    # cross-entropy alone has a compute floor: exp of every logit, timed in the same rounds
    for r in rows:
        if r["kernel"] == "softmax_cross_entropy":
            assert r["floor_pattern"] == "r1w1 exp" and r["floor_s"] > 0 and r["floor_share"] > 0
        else:
            assert r["floor_pattern"] is None and r["floor_s"] is None and r["floor_share"] is None
    assert "| kernel | shape | thr | SOL | compute floor | bnfast | % SOL | % floor |" in table
    numpy_rows = [r for r in rows if r["impl"] == "numpy"]
    assert all(r["vs_numpy"] == pytest.approx(1.0) for r in numpy_rows)
    assert {o["binding"] for o in result["overhead"]} >= {
        "_core.batch_norm_train",
        "_core.softmax_cross_entropy",
    }
    assert bnfast.get_num_threads() != 0
    full = bench.format_table(result, all_rows=True)
    assert "| kernel | shape | thr | impl |" in full
    assert full.count("\n") > table.count("\n") - 20


def test_every_quick_case_builds_and_runs():
    for case in bench.cases(quick=True):
        impls = case.build()
        for impl in impls.values():
            impl.fn()
        assert case.nbytes == sum(p.nbytes for p in case.passes)
        if case.kernel.startswith("batch_norm_"):
            assert {f"bnfast-{isa}" for isa in bnfast.available_isas()} <= set(impls)


def test_reference_shapes_and_formulas():
    every = {(c.kernel, c.shape): c for c in bench.cases()}
    full = {k: c for k, c in every.items() if c.dtype == "float32"}
    assert {"256x1024", "8192x1024", "nchw-32x64x56x56", "nhwc-32x56x56x64"} == {
        s for k, s in full if k == "batch_norm_train"
    }
    assert {"256x10", "4096x1000", "65536x10"} == {
        s for k, s in full if k == "softmax_cross_entropy"
    }
    assert {"1e5", "1e7", "1e7/100"} == {s for k, s in full if k == "adam"}
    # bfloat16 rows at the same shapes, with half the bytes of the bfloat16 arrays; optimizers
    # with state also with bfloat16 state (PyTorch's layout)
    stateful = {k for k, (state, _, _) in OPTIMIZER_CASES.items() if state}
    assert {(k, f"{s} bfloat16") for k, s in full} | {
        (k, f"{s} bfloat16 bf16-state") for k, s in full if k in stateful
    } == {k for k, c in every.items() if c.dtype != "float32"}
    n = 8192 * 1024
    assert every["batch_norm_train", "8192x1024 bfloat16"].nbytes == 3 * 2 * n
    assert (
        every["batch_norm_backward", "nchw-32x64x56x56 bfloat16"].nbytes
        == 3 * 2 * 32 * 64 * 56 * 56
    )
    assert every["adam", "1e7 bfloat16"].nbytes == (3 * 2 + 2 * 8) * 10**7  # float32 state
    assert every["adam", "1e7 bfloat16 bf16-state"].nbytes == (3 * 2 + 2 * 4) * 10**7
    assert every["sgd", "1e5 bfloat16"].nbytes == 3 * 2 * 10**5
    n = 8192 * 1024
    assert full["batch_norm_train", "8192x1024"].nbytes == 3 * 4 * n
    assert full["batch_norm_eval", "8192x1024"].nbytes == 2 * 4 * n
    assert full["batch_norm_backward", "8192x1024"].nbytes == 5 * 4 * n
    # a channel of NCHW (32 planes of 56x56) fits in cache: one pass over memory
    m = 32 * 64 * 56 * 56
    assert full["batch_norm_train", "nchw-32x64x56x56"].nbytes == 2 * 4 * m
    assert full["batch_norm_backward", "nchw-32x64x56x56"].nbytes == 3 * 4 * m
    assert full["batch_norm_train", "nhwc-32x56x56x64"].nbytes == 3 * 4 * m
    assert full["softmax_cross_entropy", "4096x1000"].nbytes == 2 * 4 * 4096 * 1000 + 8 * 4096
    assert full["adam", "1e7/100"].nbytes == 7 * 4 * 10**7
    assert full["sgd", "1e5"].nbytes == 3 * 4 * 10**5


def test_case_ids_are_public_names():
    ids = {c.kernel for c in bench.cases(quick=True)}
    assert ids == {
        "batch_norm_train",
        "batch_norm_eval",
        "batch_norm_backward",
        "softmax_cross_entropy",
        "sgd",
        "sgd_momentum",
        "rmsprop",
        "adam",
        "adamw",
    }
    public = {*dir(bnfast), *(name.lower() for name in dir(bnfast.optim))}
    for kernel in ids - {"sgd_momentum"}:  # SGD with momentum: sgd's second case
        assert (
            kernel.removesuffix("_train").removesuffix("_eval").removesuffix("_backward") in public
        )
    assert set(bench.OLD_IDS.values()) <= ids
    pytest.importorskip("torch")
    from bnfast.torch import bench as torch_bench

    assert {k for k, _ in torch_bench.CASES} <= ids


def test_old_result_ids_map_to_case_ids():
    """JSON files of earlier runs (bench/results/) keep their ids; OLD_IDS reads them. Drop-in
    rows may also be whole training steps (``bnfast.torch.bench``'s conv-net cases), checked
    where PyTorch is installed."""
    ids = {c.kernel for c in bench.cases(quick=True)}
    steps = None
    if importlib.util.find_spec("torch") is not None:
        from bnfast.torch import bench as torch_bench

        steps = ids | {k for k, _ in torch_bench.COMPILED_CASES + torch_bench.AUTOCAST_CASES}
    paths = sorted((pathlib.Path(__file__).parents[1] / "bench" / "results").glob("*.json"))
    for path in paths:
        run = json.loads(path.read_text())
        checks = [(run["rows"], ids)] + ([(run.get("dropin", []), steps)] if steps else [])
        for rows, known in checks:
            for r in rows:
                kernel = bench.OLD_IDS.get(r["kernel"], r["kernel"])
                assert kernel in known, (path.name, kernel)


def test_filters_select_nothing():
    result = bench.run(kernels=["no_such_kernel"], quick=True, with_overhead=False)
    assert result["rows"] == []


def test_bad_threads_argument(capsys):
    assert main(["bench", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_torch_dropin_rows():
    pytest.importorskip("torch")
    rows = bench.dropin(threads=[1], rounds=1, min_sample=0, kernels=["softmax_cross_entropy"])
    assert {r["shape"] for r in rows} == {"256x10", "4096x1000", "65536x10"}
    for r in rows:
        assert r["torch"] > 0 and r["bnfast.torch"] > 0 and r["speedup"] > 0
    assert "bnfast.torch" in bench.format_dropin(rows)
