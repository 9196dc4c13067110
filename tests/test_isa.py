"""ISA selection, the BNFAST_ISA override, kernel tables and the per-ISA object code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

import bnfast
from bnfast import _core

KNOWN = _core.compiled_isas()  # the ISA list lives in csrc/include/bnfast/isa_list.h


def run_python(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Runs the interpreter outside the source tree, so the installed package is imported."""
    full_env = {k: v for k, v in os.environ.items() if k != "BNFAST_ISA"}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        cwd="/",
    )


def test_available_isas():
    avail = bnfast.available_isas()
    assert avail[0] == "scalar"
    assert set(avail) <= set(KNOWN)
    assert bnfast.active_isa() in avail


def test_use_isa_switches_and_restores():
    before = bnfast.active_isa()
    for name in bnfast.available_isas():
        with bnfast.use_isa(name):
            assert bnfast.active_isa() == name
        assert bnfast.active_isa() == before


def test_unknown_isa_is_value_error():
    with pytest.raises(ValueError, match="unknown ISA 'sse9'"), bnfast.use_isa("sse9"):
        pass
    with pytest.raises(TypeError), bnfast.use_isa(3):  # type: ignore[arg-type]
        pass


def test_unsupported_isa_is_runtime_error():
    missing = [n for n in KNOWN if n not in bnfast.available_isas()]
    if not missing:
        pytest.skip("this CPU supports every ISA compiled into this build")
    with pytest.raises(RuntimeError, match="not"), bnfast.use_isa(missing[0]):
        pass


@pytest.mark.parametrize("name", bnfast.available_isas())
def test_environment_override(name):
    r = run_python(["-c", "import bnfast; print(bnfast.active_isa())"], BNFAST_ISA=name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name


def test_environment_override_errors():
    r = run_python(["-c", "import bnfast"], BNFAST_ISA="avx9000")
    assert r.returncode != 0
    assert "ValueError: unknown ISA 'avx9000'" in r.stderr
    missing = [n for n in KNOWN if n not in bnfast.available_isas()]
    if missing:
        r = run_python(["-c", "import bnfast"], BNFAST_ISA=missing[0])
        assert r.returncode != 0 and "RuntimeError" in r.stderr


def test_no_empty_kernel_slot():
    assert _core.empty_kernel_slots() == []


def test_threads():
    n = bnfast.get_num_threads()
    try:
        bnfast.set_num_threads(3)
        assert bnfast.get_num_threads() == (3 if _core.openmp else 1)
        with pytest.raises(ValueError, match="n must be >= 1"):
            bnfast.set_num_threads(0)
        with pytest.raises(TypeError):
            bnfast.set_num_threads(2.0)  # type: ignore[arg-type]
    finally:
        bnfast.set_num_threads(n)


def test_show_config_and_cli(capsys):
    bnfast.show_config()
    out = capsys.readouterr().out
    assert bnfast.__version__ in out and bnfast.active_isa() in out and "num_threads" in out
    r = run_python(["-m", "bnfast.cli", "info"])
    assert r.returncode == 0 and "available_isas" in r.stdout


def _functions_using(disasm: str, register: str) -> set[str]:
    """Demangled names of the functions whose code uses a register class (zmm, ymm)."""
    names, current = set(), None
    for line in disasm.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            current = m.group(1)
        elif current and re.search(rf"%{register}\d", line):
            names.add(current)
    return names


def test_wide_registers_only_in_their_isa_namespace():
    # An inline function or template instantiated with AVX-512 flags and also elsewhere is one
    # weak symbol; if the linker kept the AVX-512 copy, scalar code would run it. Every function
    # using zmm must be in bnfast::avx512(_bf16), every one using ymm in one of the SIMD ones.
    if "avx2" not in _core.compiled_isas():
        pytest.skip("no x86 SIMD ISAs in this build")
    if shutil.which("objdump") is None:  # a missing tool fails the check, it does not skip it
        pytest.fail("needs objdump: apt-get install binutils")
    disasm = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-C", _core.__file__],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    zmm = _functions_using(disasm, "zmm")
    ymm = _functions_using(disasm, "ymm")
    assert any("bnfast::avx512::" in f for f in zmm), "expected AVX-512 kernels"
    assert any("bnfast::avx2::" in f for f in ymm), "expected AVX2 kernels"
    bad_zmm = sorted(f for f in zmm if not re.search(r"bnfast::avx512(_bf16)?::", f))
    bad_ymm = sorted(f for f in ymm if not re.search(r"bnfast::avx(2|512|512_bf16)::", f))
    assert not bad_zmm, f"zmm outside bnfast::avx512(_bf16): {bad_zmm[:5]}"
    assert not bad_ymm, f"ymm outside the SIMD ISAs: {bad_ymm[:5]}"
