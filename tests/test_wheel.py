"""The installed package as a user gets it: the version from one place, `bnfast info`, the files
and libraries a wheel must carry, the scalar path forced, and bnfast beside PyTorch (both import
orders, threads, fork). tools/test_wheels.sh runs this with BNFAST_EXPECT_WHEEL=1 from a fresh venv
where the wheel is installed; elsewhere (an editable install) the wheel-only checks skip."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bnfast
from bnfast import _core

EXPECT_WHEEL = os.environ.get("BNFAST_EXPECT_WHEEL") == "1"
DIST = importlib.metadata.distribution("bnfast")
PACKAGE = Path(bnfast.__file__).resolve().parent
# What a manylinux wheel may take from the system (auditwheel's policy); all else is bundled.
SYSTEM_LIBS = {
    "libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libpthread.so.0",
    "libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}  # fmt: skip


# Only a repaired wheel bundles its libraries: `pip install .` and editable installs build an
# unrepaired one, so these checks run where tools/test_wheels.sh installed a wheel (as in CI).
wheel_only = pytest.mark.skipif(
    not EXPECT_WHEEL,
    reason="not a repaired wheel (tools/test_wheels.sh sets BNFAST_EXPECT_WHEEL=1)",
)


# `python -c` puts the current directory first on sys.path: run from one with no bnfast folder.
NEUTRAL_DIR = tempfile.gettempdir()


def _run(code: str, env: dict[str, str] | None = None, timeout: int = 120):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=NEUTRAL_DIR,
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_version_comes_from_the_package_metadata():
    assert bnfast.__version__ == DIST.version == importlib.metadata.version("bnfast")
    assert _core.__version__ == DIST.version  # CMake's SKBUILD_PROJECT_VERSION, same pyproject


def test_info_prints_version_compiler_and_flags():
    script = shutil.which("bnfast", path=str(Path(sys.executable).parent))
    args = [script, "info"] if script else [sys.executable, "-m", "bnfast.cli", "info"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    fields = dict(re.findall(r"^(\w+): *(.*)$", out, re.M))
    assert fields["version"] == DIST.version
    assert fields["compiler"] == _core.compiler and re.match(r"\w+ \d+\.\d+", _core.compiler)
    assert fields["cxx_flags"] == _core.cxx_flags and "-ffp-contract=off" in _core.cxx_flags
    # No CPU assumption in the build: the baseline is x86-64, the wide ISAs are chosen at run time.
    assert "-march" not in _core.cxx_flags and "-mavx" not in _core.cxx_flags


@wheel_only
def test_bnfast_is_imported_from_the_installed_package_not_the_source_tree():
    site = Path(DIST.locate_file("")).resolve()
    assert site / "bnfast" == PACKAGE, (PACKAGE, site)
    assert Path(_core.__file__).resolve().parent == PACKAGE


@wheel_only
def test_the_wheel_carries_its_files():
    files = {str(f) for f in DIST.files or []}
    for name in ["bnfast/py.typed", "bnfast/_core.pyi", "bnfast/__init__.py"]:
        assert name in files and (PACKAGE.parent / name).is_file(), name
    assert any(Path(f).name == "LICENSE" for f in files), sorted(files)[:20]
    license_text = next(f for f in DIST.files if f.name == "LICENSE").read_text()
    assert "MIT License" in license_text and "the bnfast authors" in license_text
    meta = DIST.metadata
    assert meta["Requires-Python"] == ">=3.9"
    minor = f"Programming Language :: Python :: {sys.version_info[0]}.{sys.version_info[1]}"
    assert minor in meta.get_all("Classifier")


def _needed(path: str) -> list[str]:
    """The DT_NEEDED entries of an ELF file (objdump is required: binutils)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.fail("objdump (binutils) is needed: apt-get install binutils")
    out = subprocess.run([objdump, "-p", path], capture_output=True, text=True, check=True)
    return re.findall(r"^\s*NEEDED\s+(\S+)", out.stdout, re.M)


@wheel_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF wheels only")
def test_every_library_is_bundled_or_part_of_the_manylinux_base():
    libs = PACKAGE.parent / "bnfast.libs"
    bundled = {p.name for p in libs.iterdir()} if libs.is_dir() else set()
    needed = _needed(_core.__file__)
    missing = [n for n in needed if n not in bundled and n not in SYSTEM_LIBS]
    assert not missing, f"_core needs libraries the wheel does not bundle: {missing}"
    if _core.openmp:
        assert any(n.startswith("libgomp") and n in bundled for n in needed), needed
    for lib in bundled:  # the bundled libraries themselves need only the base
        extra = [n for n in _needed(str(libs / lib)) if n not in bundled | SYSTEM_LIBS]
        assert not extra, (lib, extra)
    ldd = subprocess.run(["ldd", _core.__file__], capture_output=True, text=True).stdout
    assert "not found" not in ldd, ldd


def test_forced_scalar_path_runs_and_matches():
    """BNFAST_ISA=scalar at import: a CPU without AVX2 takes this path (the dispatch has no hook
    to mock the CPU's feature bits; the scalar kernels are what such a CPU runs)."""
    code = """
        import sys, numpy as np, bnfast
        assert bnfast.active_isa() == "scalar", bnfast.active_isa()
        x = np.random.default_rng(0).normal(size=(64, 33)).astype(np.float32)
        y, _, _ = bnfast.batch_norm(x, np.zeros(33, np.float32), np.ones(33, np.float32), training=True)
        loss, g = bnfast.softmax_cross_entropy(x, np.arange(64) % 33)
        out = np.concatenate([y.ravel(), g.ravel(), [np.float32(loss)]]).astype(np.float32)
        sys.stdout.buffer.write(out.tobytes())
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=NEUTRAL_DIR,
        capture_output=True, timeout=120, env={**os.environ, "BNFAST_ISA": "scalar"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    got = np.frombuffer(out.stdout, np.float32)
    x = np.random.default_rng(0).normal(size=(64, 33)).astype(np.float32)
    with bnfast.use_isa("scalar"):
        y, _, _ = bnfast.batch_norm(
            x, np.zeros(33, np.float32), np.ones(33, np.float32), training=True
        )
        loss, g = bnfast.softmax_cross_entropy(x, np.arange(64) % 33)
    want = np.concatenate([y.ravel(), g.ravel(), [np.float32(loss)]]).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# --- beside PyTorch: both import orders --------------------------------------------------------

_KERNELS = """
    import hashlib, os, numpy as np
    def digest():
        from bnfast import _core
        _core.set_parallel_min_bytes(0)  # every call threaded, the pool really used
        rng = np.random.default_rng(1)
        x = rng.normal(size=(512, 256)).astype(np.float32)
        out = []
        for n in (1, 2):
            bnfast.set_num_threads(n)
            assert bnfast.get_num_threads() == n
            y, m, s = bnfast.batch_norm(x, np.zeros(256, np.float32), np.ones(256, np.float32), training=True)
            loss, g = bnfast.softmax_cross_entropy(x, np.arange(512) % 256)
            p = [x.copy()]
            bnfast.optim.Adam(p, lr=1e-3, grads=[x]).step()
            out += [y, m, s, g, np.float32(loss), p[0]]
        return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in out)).hexdigest()
"""


def _digest(imports: str) -> str:
    code = imports + textwrap.dedent(_KERNELS) + "\nprint(digest())\n"
    r = _run(code)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("order", ["torch-first", "bnfast-first"])
def test_beside_torch_kernels_are_bitwise_as_alone(order):
    pytest.importorskip("torch")
    alone = _digest("import bnfast\n")
    imports = (
        "import torch\nimport bnfast\n"
        if order == "torch-first"
        else "import bnfast\nimport torch\n"
    )
    assert _digest(imports + "torch.ones(10).sum()\n") == alone


@pytest.mark.parametrize("order", ["torch-first", "bnfast-first"])
def test_beside_torch_threads_and_fork(order):
    """Each library keeps its own thread count, a threaded bnfast kernel runs between PyTorch's
    threaded ops, and a child forked after both ran threaded finishes (one thread) instead of
    hanging in an OpenMP pool that did not survive the fork."""
    pytest.importorskip("torch")
    first, second = ("torch", "bnfast") if order == "torch-first" else ("bnfast", "torch")
    code = f"""
        import {first}, {second}
        import os, numpy as np, bnfast, torch
        from bnfast import _core
        _core.set_parallel_min_bytes(0)
        torch.set_num_threads(2)
        bnfast.set_num_threads(2)
        bnfast.set_num_threads(1)
        assert bnfast.get_num_threads() == 1 and torch.get_num_threads() == 2
        bnfast.set_num_threads(2)
        x = np.ones((1024, 256), np.float32)
        t = torch.ones(1024, 256)
        for _ in range(20):
            (t @ t.T).sum()
            bnfast.batch_norm(x, np.zeros(256, np.float32), np.ones(256, np.float32), training=True)
        assert torch.get_num_threads() == 2 and bnfast.get_num_threads() == 2
        pid = os.fork()
        if pid == 0:
            y, _, _ = bnfast.batch_norm(x, np.zeros(256, np.float32), np.ones(256, np.float32), training=True)
            ok = bnfast.get_num_threads() == 1 and float(np.abs(y).max()) == 0.0
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0, status
        print("ok")
    """
    r = _run(code, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
